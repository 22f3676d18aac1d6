using System.Xml.Serialization;

namespace OdaKvmBackup.HelpBuilder.Maml;

// The MAML that PowerShell's help system reads (en-US/<Assembly>.dll-Help.xml), as a typed model for
// XmlSerializer, after platyPS v2's MamlWriter. Element order matters to Get-Help: hence the Order values.

public static class MamlNamespace
{
    public const string Root = "http://msh";
    public const string Maml = "http://schemas.microsoft.com/maml/2004/10";
    public const string Command = "http://schemas.microsoft.com/maml/dev/command/2004/10";
    public const string Dev = "http://schemas.microsoft.com/maml/dev/2004/10";

    public static XmlSerializerNamespaces Prefixes()
    {
        var prefixes = new XmlSerializerNamespaces();
        prefixes.Add("maml", Maml);
        prefixes.Add("command", Command);
        prefixes.Add("dev", Dev);
        return prefixes;
    }
}

[XmlRoot("helpItems", Namespace = MamlNamespace.Root)]
public sealed class HelpItems
{
    [XmlAttribute("schema")]
    public string Schema { get; set; } = "maml";

    [XmlElement("command", Namespace = MamlNamespace.Command)]
    public List<MamlCommand> Commands { get; set; } = [];
}

public sealed class MamlCommand
{
    [XmlElement("details", Namespace = MamlNamespace.Command, Order = 0)]
    public CommandDetails Details { get; set; } = new();

    [XmlArray("description", Namespace = MamlNamespace.Maml, Order = 1)]
    [XmlArrayItem("para", Namespace = MamlNamespace.Maml)]
    public List<string> Description { get; set; } = [];

    [XmlArray("syntax", Namespace = MamlNamespace.Command, Order = 2)]
    [XmlArrayItem("syntaxItem", Namespace = MamlNamespace.Command)]
    public List<SyntaxItem> Syntax { get; set; } = [];

    [XmlArray("parameters", Namespace = MamlNamespace.Command, Order = 3)]
    [XmlArrayItem("parameter", Namespace = MamlNamespace.Command)]
    public List<MamlParameter> Parameters { get; set; } = [];

    [XmlArray("inputTypes", Namespace = MamlNamespace.Command, Order = 4)]
    [XmlArrayItem("inputType", Namespace = MamlNamespace.Command)]
    public List<TypedValue> InputTypes { get; set; } = [];

    [XmlArray("returnValues", Namespace = MamlNamespace.Command, Order = 5)]
    [XmlArrayItem("returnValue", Namespace = MamlNamespace.Command)]
    public List<TypedValue> ReturnValues { get; set; } = [];

    /// <summary>NOTES; null leaves the element out.</summary>
    [XmlArray("alertSet", Namespace = MamlNamespace.Maml, Order = 6)]
    [XmlArrayItem("alert", Namespace = MamlNamespace.Maml)]
    public List<Alert>? AlertSet { get; set; }

    [XmlArray("examples", Namespace = MamlNamespace.Command, Order = 7)]
    [XmlArrayItem("example", Namespace = MamlNamespace.Command)]
    public List<Example> Examples { get; set; } = [];

    [XmlArray("relatedLinks", Namespace = MamlNamespace.Command, Order = 8)]
    [XmlArrayItem("navigationLink", Namespace = MamlNamespace.Maml)]
    public List<NavigationLink> RelatedLinks { get; set; } = [];
}

public sealed class CommandDetails
{
    [XmlElement("name", Namespace = MamlNamespace.Command, Order = 0)]
    public string Name { get; set; } = "";

    [XmlElement("verb", Namespace = MamlNamespace.Command, Order = 1)]
    public string Verb { get; set; } = "";

    [XmlElement("noun", Namespace = MamlNamespace.Command, Order = 2)]
    public string Noun { get; set; } = "";

    /// <summary>The synopsis.</summary>
    [XmlArray("description", Namespace = MamlNamespace.Maml, Order = 3)]
    [XmlArrayItem("para", Namespace = MamlNamespace.Maml)]
    public List<string> Synopsis { get; set; } = [];
}

public sealed class SyntaxItem
{
    [XmlElement("name", Namespace = MamlNamespace.Maml, Order = 0)]
    public string CommandName { get; set; } = "";

    [XmlElement("parameter", Namespace = MamlNamespace.Command, Order = 1)]
    public List<MamlParameter> Parameters { get; set; } = [];
}

public sealed class MamlParameter
{
    [XmlElement("name", Namespace = MamlNamespace.Maml, Order = 0)]
    public string Name { get; set; } = "";

    /// <summary>Null in syntax items: Get-Help reads descriptions from command:parameters only.</summary>
    [XmlArray("description", Namespace = MamlNamespace.Maml, Order = 1)]
    [XmlArrayItem("para", Namespace = MamlNamespace.Maml)]
    public List<string>? Description { get; set; }

    /// <summary>The values of a ValidateSet; null when there is none.</summary>
    [XmlArray("parameterValueGroup", Namespace = MamlNamespace.Command, Order = 2)]
    [XmlArrayItem("parameterValue", Namespace = MamlNamespace.Command)]
    public List<ParameterValue>? ValueGroup { get; set; }

    /// <summary>"&lt;String[]&gt;" after the name; null for a switch, which takes no value.</summary>
    [XmlElement("parameterValue", Namespace = MamlNamespace.Command, Order = 3)]
    public ParameterValue? Value { get; set; }

    [XmlElement("type", Namespace = MamlNamespace.Dev, Order = 4)]
    public DataType? Type { get; set; }

    [XmlElement("defaultValue", Namespace = MamlNamespace.Dev, Order = 5)]
    public string? DefaultValue { get; set; }

    [XmlAttribute("required")]
    public bool Required { get; set; }

    [XmlAttribute("variableLength")]
    public bool VariableLength { get; set; }

    [XmlAttribute("globbing")]
    public bool Globbing { get; set; }

    /// <summary>"True (ByPropertyName, ByValue)" or "False".</summary>
    [XmlAttribute("pipelineInput")]
    public string PipelineInput { get; set; } = "False";

    /// <summary>"named" or the 0-based position.</summary>
    [XmlAttribute("position")]
    public string Position { get; set; } = "named";

    /// <summary>"Name, Domain" or "none".</summary>
    [XmlAttribute("aliases")]
    public string Aliases { get; set; } = "none";
}

public sealed class ParameterValue
{
    [XmlText]
    public string Text { get; set; } = "";

    /// <summary>Whether the value (not the parameter) is required: true but for switches.</summary>
    [XmlAttribute("required")]
    public bool Required { get; set; } = true;

    [XmlAttribute("variableLength")]
    public bool VariableLength { get; set; }
}

public sealed class DataType
{
    [XmlElement("name", Namespace = MamlNamespace.Maml, Order = 0)]
    public string Name { get; set; } = "";

    [XmlElement("uri", Namespace = MamlNamespace.Maml, Order = 1)]
    public string Uri { get; set; } = "";
}

/// <summary>An INPUTS or OUTPUTS entry.</summary>
public sealed class TypedValue
{
    [XmlElement("type", Namespace = MamlNamespace.Dev, Order = 0)]
    public DataType Type { get; set; } = new();

    [XmlArray("description", Namespace = MamlNamespace.Maml, Order = 1)]
    [XmlArrayItem("para", Namespace = MamlNamespace.Maml)]
    public List<string> Description { get; set; } = [];
}

public sealed class Alert
{
    [XmlElement("para", Namespace = MamlNamespace.Maml)]
    public List<string> Paragraphs { get; set; } = [];
}

public sealed class Example
{
    [XmlElement("title", Namespace = MamlNamespace.Maml, Order = 0)]
    public string Title { get; set; } = "";

    [XmlElement("code", Namespace = MamlNamespace.Dev, Order = 1)]
    public string Code { get; set; } = "";

    [XmlArray("remarks", Namespace = MamlNamespace.Dev, Order = 2)]
    [XmlArrayItem("para", Namespace = MamlNamespace.Maml)]
    public List<string> Remarks { get; set; } = [];
}

public sealed class NavigationLink
{
    [XmlElement("linkText", Namespace = MamlNamespace.Maml, Order = 0)]
    public string LinkText { get; set; } = "";

    [XmlElement("uri", Namespace = MamlNamespace.Maml, Order = 1)]
    public string Uri { get; set; } = "";
}
