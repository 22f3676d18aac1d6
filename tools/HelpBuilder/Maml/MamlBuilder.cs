using System.Text;
using System.Xml;
using System.Xml.Serialization;
using OdaKvmBackup.HelpBuilder.Facts;
using OdaKvmBackup.HelpBuilder.Markdown;

namespace OdaKvmBackup.HelpBuilder.Maml;

/// <summary>
/// Builds a cmdlet's MAML: syntax and parameter attributes (required, position, pipeline input, aliases, type,
/// sets) from the cmdlet's metadata; synopsis, descriptions, examples, inputs, outputs, notes and links from its page.
/// </summary>
public static class MamlBuilder
{
    public static HelpItems Build(IEnumerable<(CommandFacts Command, CommandPage Page)> commands) =>
        new() { Commands = commands.Select(c => Command(c.Command, c.Page)).ToList() };

    public static MamlCommand Command(CommandFacts command, CommandPage page)
    {
        return new MamlCommand
        {
            Details = new CommandDetails
            {
                Name = command.Name,
                Verb = command.Verb,
                Noun = command.Noun,
                Synopsis = [.. page.Synopsis],
            },
            Description = [.. page.Description],
            Syntax = command.SetsInDisplayOrder().Select(set => new SyntaxItem
            {
                CommandName = command.Name,
                Parameters = CmdletHelp.DisplayOrder(set).Select(binding => SyntaxParameter(command, binding)).ToList(),
            }).ToList(),
            Parameters = ParametersInPageOrder(command, page).Select(p => Parameter(command, p, page.FindParameter(p.Name))).ToList(),
            InputTypes = page.Inputs.Select(TypedValue).ToList(),
            ReturnValues = page.Outputs.Select(TypedValue).ToList(),
            AlertSet = page.Notes.Count == 0 ? null : [new Alert { Paragraphs = [.. page.Notes] }],
            Examples = page.Examples.Select(Example).ToList(),
            RelatedLinks = RelatedLinks(page),
        };
    }

    /// <summary>The page's order for the parameters it documents, then any it lacks in the cmdlet's order; never one the cmdlet lacks.</summary>
    public static IEnumerable<ParameterFacts> ParametersInPageOrder(CommandFacts command, CommandPage page) =>
        page.Parameters.Select(p => command.FindParameter(p.Name)).OfType<ParameterFacts>()
            .Concat(command.Parameters.Where(p => page.FindParameter(p.Name) is null))
            .Distinct();

    private static MamlParameter SyntaxParameter(CommandFacts command, SetParameterFacts binding)
    {
        var parameter = command.FindParameter(binding.Name)
            ?? throw new InvalidDataException($"{command.Name}: the set parameter -{binding.Name} is missing from its parameter list.");
        return new MamlParameter
        {
            Name = parameter.Name,
            Required = binding.IsMandatory,
            Position = Position(binding.Position),
            PipelineInput = CmdletHelp.PipelineInput(binding.ValueFromPipeline, binding.ValueFromPipelineByPropertyName),
            Aliases = Aliases(parameter),
            Globbing = parameter.SupportsWildcards,
            VariableLength = parameter.IsArray,
            ValueGroup = ValueGroup(parameter),
            Value = Value(parameter, inSyntax: true),
            Type = new DataType { Name = parameter.Type },
        };
    }

    /// <summary>A parameter of command:parameters: mandatory or piped in any set; position as the default set has it.</summary>
    private static MamlParameter Parameter(CommandFacts command, ParameterFacts parameter, ParameterSection? section)
    {
        var bindings = CmdletHelp.Bindings(command, parameter.Name).Select(b => b.Binding).ToList();
        string? defaultValue = section?.Yaml.Select(y => y[ParameterYaml.DefaultValue]).FirstOrDefault(v => !string.IsNullOrWhiteSpace(v));
        return new MamlParameter
        {
            Name = parameter.Name,
            Description = section is null ? [] : [.. section.Description],
            Required = bindings.Any(b => b.IsMandatory),
            Position = Position(bindings.FirstOrDefault()?.Position),
            PipelineInput = CmdletHelp.PipelineInput(bindings.Any(b => b.ValueFromPipeline), bindings.Any(b => b.ValueFromPipelineByPropertyName)),
            Aliases = Aliases(parameter),
            Globbing = parameter.SupportsWildcards,
            VariableLength = parameter.IsArray,
            ValueGroup = ValueGroup(parameter),
            Value = Value(parameter, inSyntax: false),
            Type = new DataType { Name = parameter.Type },
            DefaultValue = defaultValue ?? (parameter.IsSwitch ? "False" : "None"),
        };
    }

    private static string Position(int? position) => position?.ToString(System.Globalization.CultureInfo.InvariantCulture) ?? "named";

    private static string Aliases(ParameterFacts parameter) => parameter.Aliases.Count == 0 ? "none" : string.Join(", ", parameter.Aliases);

    /// <summary>
    /// A switch's value is optional: the syntax shows "[-Force]" (no value element at all), the parameter list
    /// "-Force [&lt;SwitchParameter&gt;]" (a value that is not required).
    /// </summary>
    private static ParameterValue? Value(ParameterFacts parameter, bool inSyntax) =>
        parameter.IsSwitch && inSyntax ? null
        : new ParameterValue { Text = parameter.TypeName, Required = !parameter.IsSwitch, VariableLength = parameter.IsArray };

    private static List<ParameterValue>? ValueGroup(ParameterFacts parameter) =>
        parameter.AcceptedValues.Count == 0 ? null : parameter.AcceptedValues.Select(v => new ParameterValue { Text = v, Required = false }).ToList();

    private static TypedValue TypedValue(TypeSection section) =>
        new() { Type = new DataType { Name = section.TypeName }, Description = [.. section.Description] };

    /// <summary>Code blocks at the top of an example are its code; the trailing empty paragraph puts a blank line before the next title.</summary>
    private static Example Example(ExampleSection example) => new()
    {
        Title = $"---------- {example.Title} ----------",
        Code = string.Join("\n\n", example.Code),
        Remarks = [.. example.Remarks, ""],
    };

    private static List<NavigationLink> RelatedLinks(CommandPage page)
    {
        var links = new List<NavigationLink>();
        if (!string.IsNullOrWhiteSpace(page.OnlineVersion))
            links.Add(new NavigationLink { LinkText = "Online Version:", Uri = page.OnlineVersion });
        links.AddRange(page.RelatedLinks.Select(l => new NavigationLink { LinkText = l.Text, Uri = l.Uri }));
        return links;
    }

    public static void Write(HelpItems help, string path)
    {
        Directory.CreateDirectory(Path.GetDirectoryName(Path.GetFullPath(path))!);
        var settings = new XmlWriterSettings
        {
            Indent = true,
            IndentChars = "  ",
            NewLineChars = "\n",
            Encoding = new UTF8Encoding(encoderShouldEmitUTF8Identifier: false),
        };
        using var writer = XmlWriter.Create(path, settings);
        new XmlSerializer(typeof(HelpItems)).Serialize(writer, help, MamlNamespace.Prefixes());
    }

    public static string ToXml(HelpItems help)
    {
        using var text = new StringWriter();
        new XmlSerializer(typeof(HelpItems)).Serialize(text, help, MamlNamespace.Prefixes());
        return text.ToString();
    }
}
