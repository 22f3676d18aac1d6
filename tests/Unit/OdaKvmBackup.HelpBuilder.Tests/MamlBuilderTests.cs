using System.Xml;
using OdaKvmBackup.HelpBuilder.Maml;
using OdaKvmBackup.HelpBuilder.Markdown;
using OdaKvmBackup.HelpBuilder.Tests.Support;

namespace OdaKvmBackup.HelpBuilder.Tests;

public class MamlBuilderTests
{
    private static XmlDocument Maml(string folder)
    {
        var module = Fixture.Sample;
        var commands = module.Commands.Where(c => File.Exists(Fixture.Path(folder, c.Name + ".md"))).Select(c => (c, Fixture.Page(folder, c.Name)));
        var xml = new XmlDocument();
        xml.LoadXml(MamlBuilder.ToXml(MamlBuilder.Build(commands)));
        return xml;
    }

    private static XmlNamespaceManager Namespaces(XmlDocument xml)
    {
        var ns = new XmlNamespaceManager(xml.NameTable);
        ns.AddNamespace("msh", MamlNamespace.Root);
        ns.AddNamespace("maml", MamlNamespace.Maml);
        ns.AddNamespace("command", MamlNamespace.Command);
        ns.AddNamespace("dev", MamlNamespace.Dev);
        return ns;
    }

    private static XmlElement Command(XmlDocument xml, string name) =>
        (XmlElement)xml.SelectSingleNode($"/msh:helpItems/command:command[command:details/command:name='{name}']", Namespaces(xml))!;

    private static XmlElement Parameter(XmlDocument xml, string command, string parameter) =>
        (XmlElement)Command(xml, command).SelectSingleNode($"command:parameters/command:parameter[maml:name='{parameter}']", Namespaces(xml))!;

    [Fact]
    public void The_root_is_helpItems_in_the_msh_namespace_with_the_maml_schema()
    {
        var xml = Maml("Agreeing");
        Assert.Equal("helpItems", xml.DocumentElement!.LocalName);
        Assert.Equal(MamlNamespace.Root, xml.DocumentElement.NamespaceURI);
        Assert.Equal("maml", xml.DocumentElement.GetAttribute("schema"));
        Assert.Equal(2, xml.SelectNodes("/msh:helpItems/command:command", Namespaces(xml))!.Count);
        Assert.Equal(MamlNamespace.Maml, xml.DocumentElement.GetNamespaceOfPrefix("maml"));
        Assert.Equal(MamlNamespace.Command, xml.DocumentElement.GetNamespaceOfPrefix("command"));
        Assert.Equal(MamlNamespace.Dev, xml.DocumentElement.GetNamespaceOfPrefix("dev"));
    }

    [Fact]
    public void Details_hold_name_verb_noun_and_the_synopsis()
    {
        var xml = Maml("Agreeing");
        var ns = Namespaces(xml);
        var details = Command(xml, "Get-Widget").SelectSingleNode("command:details", ns)!;
        Assert.Equal("Get", details.SelectSingleNode("command:verb", ns)!.InnerText);
        Assert.Equal("Widget", details.SelectSingleNode("command:noun", ns)!.InnerText);
        Assert.Equal("Gets the widgets of the sample store.", details.SelectSingleNode("maml:description/maml:para", ns)!.InnerText);
    }

    [Fact]
    public void Parameter_attributes_come_from_the_cmdlet_even_where_the_page_says_otherwise()
    {
        // The broken page says Position 1 and no aliases for -Name; the cmdlet says 0 and WidgetName.
        var xml = Maml("Disagreeing");
        var name = Parameter(xml, "Get-Widget", "Name");
        Assert.Equal("0", name.GetAttribute("position"));
        Assert.Equal("WidgetName", name.GetAttribute("aliases"));
        Assert.Equal("false", name.GetAttribute("required"));
        Assert.Equal("True (ByPropertyName, ByValue)", name.GetAttribute("pipelineInput"));
        Assert.Equal("true", name.GetAttribute("globbing"));
        Assert.Equal("System.String[]", name.SelectSingleNode("dev:type/maml:name", Namespaces(xml))!.InnerText);
        Assert.Equal("String[]", name.SelectSingleNode("command:parameterValue", Namespaces(xml))!.InnerText);
    }

    [Fact]
    public void Only_the_cmdlets_parameters_are_listed_in_page_order()
    {
        var xml = Maml("Disagreeing");
        var names = Command(xml, "Get-Widget").SelectNodes("command:parameters/command:parameter/maml:name", Namespaces(xml))!
            .Cast<XmlNode>().Select(n => n.InnerText);
        // -Colour is only on the page; -Limit only in the cmdlet (listed after the documented ones, without text).
        Assert.Equal(["Name", "Id", "Kind", "Detailed", "Limit"], names);
    }

    [Fact]
    public void Descriptions_and_default_values_come_from_the_page()
    {
        var xml = Maml("Agreeing");
        var ns = Namespaces(xml);
        var detailed = Parameter(xml, "Get-Widget", "Detailed");
        Assert.Equal(["Adds the widget's history.", "The history is slow to read."],
            detailed.SelectNodes("maml:description/maml:para", ns)!.Cast<XmlNode>().Select(n => n.InnerText));
        Assert.Equal("False", detailed.SelectSingleNode("dev:defaultValue", ns)!.InnerText);
    }

    [Fact]
    public void A_parameter_mandatory_in_any_set_is_required_and_accepted_values_are_listed()
    {
        var xml = Maml("Agreeing");
        Assert.Equal("true", Parameter(xml, "Get-Widget", "Id").GetAttribute("required"));
        var values = Parameter(xml, "Get-Widget", "Kind").SelectNodes("command:parameterValueGroup/command:parameterValue", Namespaces(xml))!;
        Assert.Equal(["Round", "Square"], values.Cast<XmlNode>().Select(n => n.InnerText));
    }

    [Fact]
    public void There_is_a_syntax_item_per_set_in_PowerShells_order()
    {
        var xml = Maml("Agreeing");
        var ns = Namespaces(xml);
        var items = Command(xml, "Get-Widget").SelectNodes("command:syntax/command:syntaxItem", ns)!.Cast<XmlNode>().ToList();
        Assert.Equal(2, items.Count);
        var byId = items[1].SelectNodes("command:parameter", ns)!.Cast<XmlElement>().ToList();
        Assert.Equal(["Kind", "Id", "Limit", "Detailed"], byId.Select(p => p.SelectSingleNode("maml:name", ns)!.InnerText));
        Assert.Equal("0", byId[0].GetAttribute("position"));
        Assert.Equal("true", byId[1].GetAttribute("required"));
    }

    [Fact]
    public void A_switch_has_no_value_in_the_syntax_and_an_optional_one_in_the_parameter_list()
    {
        var xml = Maml("Agreeing");
        var ns = Namespaces(xml);
        var inSyntax = Command(xml, "Set-Widget").SelectSingleNode("command:syntax/command:syntaxItem/command:parameter[maml:name='Force']", ns)!;
        Assert.Null(inSyntax.SelectSingleNode("command:parameterValue", ns));
        var value = (XmlElement)Parameter(xml, "Set-Widget", "Force").SelectSingleNode("command:parameterValue", ns)!;
        Assert.Equal("false", value.GetAttribute("required"));
    }

    [Fact]
    public void Examples_inputs_outputs_notes_and_links_come_from_the_page()
    {
        var xml = Maml("Agreeing");
        var ns = Namespaces(xml);
        var command = Command(xml, "Get-Widget");
        var example = command.SelectSingleNode("command:examples/command:example", ns)!;
        Assert.Equal("---------- Example 1: Get a widget by name ----------", example.SelectSingleNode("maml:title", ns)!.InnerText);
        Assert.Equal("Get-Widget -Name gear\n\nName Kind\n---- ----\ngear Round", example.SelectSingleNode("dev:code", ns)!.InnerText);
        Assert.Equal("The name may hold wildcards.", example.SelectSingleNode("dev:remarks/maml:para", ns)!.InnerText);
        Assert.Equal("System.String[]", command.SelectSingleNode("command:inputTypes/command:inputType/dev:type/maml:name", ns)!.InnerText);
        Assert.Equal("Sample.Widget", command.SelectSingleNode("command:returnValues/command:returnValue/dev:type/maml:name", ns)!.InnerText);
        Assert.Equal("Needs read access to the store.", command.SelectSingleNode("maml:alertSet/maml:alert/maml:para", ns)!.InnerText);
        var links = command.SelectNodes("command:relatedLinks/maml:navigationLink", ns)!.Cast<XmlNode>()
            .Select(l => (l.SelectSingleNode("maml:linkText", ns)!.InnerText, l.SelectSingleNode("maml:uri", ns)!.InnerText));
        Assert.Equal(
        [
            ("Online Version:", "https://example.org/get-widget"),
            ("Set-Widget", ""),
            ("about_Sample", ""),
            ("The store", "https://example.org/store"),
        ], links);
    }

    [Fact]
    public void A_page_without_notes_writes_no_alertSet()
    {
        var xml = Maml("Agreeing");
        Assert.Null(Command(xml, "Set-Widget").SelectSingleNode("maml:alertSet", Namespaces(xml)));
    }

    [Fact]
    public void The_file_is_written_as_UTF8_without_BOM()
    {
        using var temp = new TempFolder();
        string path = temp.Combine("en-US", "Sample.dll-Help.xml");
        MamlBuilder.Write(MamlBuilder.Build([(Fixture.SampleCommand("Set-Widget"), Fixture.Page("Agreeing", "Set-Widget"))]), path);
        byte[] bytes = File.ReadAllBytes(path);
        Assert.Equal((byte)'<', bytes[0]);
        var xml = new XmlDocument();
        xml.Load(path);
        Assert.Equal("helpItems", xml.DocumentElement!.LocalName);
    }
}
