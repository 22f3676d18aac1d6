using OdaKvmBackup.HelpBuilder.Markdown;

namespace OdaKvmBackup.HelpBuilder.Facts;

/// <summary>What a cmdlet's own metadata says its page must show: the SYNTAX lines and each parameter's yaml block.</summary>
public static class CmdletHelp
{
    /// <summary>PowerShell's display order (CommandParameterSetInfo): positional by position, then named mandatory, then the rest.</summary>
    public static IEnumerable<SetParameterFacts> DisplayOrder(ParameterSetFacts set) =>
        set.Parameters.Where(p => p.Position is not null).OrderBy(p => p.Position)
            .Concat(set.Parameters.Where(p => p.Position is null && p.IsMandatory))
            .Concat(set.Parameters.Where(p => p.Position is null && !p.IsMandatory));

    /// <summary>One syntax line as PlatyPS writes it: "Get-VmDisk [-DomainName] &lt;String[]&gt; [&lt;CommonParameters&gt;]".</summary>
    public static string SyntaxLine(CommandFacts command, ParameterSetFacts set)
    {
        var parts = new List<string> { command.Name };
        foreach (var p in DisplayOrder(set))
        {
            var facts = command.FindParameter(p.Name);
            bool isSwitch = facts?.IsSwitch ?? false;
            string name = p.Position is null ? $"-{p.Name}" : $"[-{p.Name}]";
            string text = isSwitch ? $"-{p.Name}" : $"{name} <{facts?.TypeName}>";
            parts.Add(p.IsMandatory ? text : $"[{text}]");
        }
        parts.Add("[<CommonParameters>]");
        return string.Join(" ", parts);
    }

    /// <summary>The syntax blocks the page must have, with their set names ("" when the cmdlet has one set).</summary>
    public static IReadOnlyList<(string SetName, string Text)> Syntax(CommandFacts command) =>
        command.SetsInDisplayOrder().Select(s => (command.HasSingleSet ? "" : s.Name, SyntaxLine(command, s))).ToList();

    /// <summary>The body of "## SYNTAX" (after its heading line): a code block per set, under "### Set" when there are several.</summary>
    public static string SyntaxMarkdown(CommandFacts command)
    {
        var text = new System.Text.StringBuilder("\n");
        foreach (var set in command.SetsInDisplayOrder())
        {
            if (!command.HasSingleSet)
                text.Append("### ").Append(set.Name).Append(set.IsDefault || set.Name == command.DefaultParameterSet ? " (Default)" : "").Append("\n\n");
            text.Append("```\n").Append(SyntaxLine(command, set)).Append("\n```\n\n");
        }
        return text.ToString();
    }

    /// <summary>"True (ByPropertyName, ByValue)" or "False", as PlatyPS writes it.</summary>
    public static string PipelineInput(bool byValue, bool byPropertyName)
    {
        var kinds = new List<string>();
        if (byPropertyName) kinds.Add("ByPropertyName");
        if (byValue) kinds.Add("ByValue");
        return kinds.Count == 0 ? "False" : $"True ({string.Join(", ", kinds)})";
    }

    /// <summary>How one parameter binds in each set it belongs to, sets that bind it alike grouped together.</summary>
    public static IReadOnlyList<(IReadOnlyList<string> Sets, SetParameterFacts Binding)> Bindings(CommandFacts command, string parameter)
    {
        return command.SetsInDisplayOrder()
            .SelectMany(s => s.Parameters.Where(p => p.Name == parameter).Select(p => (Set: s.Name, Binding: p)))
            .GroupBy(x => (x.Binding.IsMandatory, x.Binding.Position, x.Binding.ValueFromPipeline, x.Binding.ValueFromPipelineByPropertyName))
            .Select(g => ((IReadOnlyList<string>)g.Select(x => x.Set).ToList(), g.First().Binding))
            .ToList();
    }

    /// <summary>
    /// The yaml blocks of a parameter, every value from the cmdlet except the default value, which the cmdlet cannot
    /// tell: that one is the page's (<paramref name="defaultValue"/>), or None (False for a switch).
    /// </summary>
    public static IReadOnlyList<ParameterYaml> YamlBlocks(CommandFacts command, ParameterFacts parameter, string? defaultValue)
    {
        var bindings = Bindings(command, parameter.Name);
        var blocks = new List<ParameterYaml>();
        foreach (var (sets, binding) in bindings)
        {
            bool all = bindings.Count == 1 && sets.Count == command.ParameterSets.Count;
            var values = new Dictionary<string, string?>
            {
                [Markdown.ParameterYaml.Type] = parameter.TypeName,
                [Markdown.ParameterYaml.ParameterSets] = all ? Markdown.ParameterYaml.All : string.Join(", ", sets),
                [Markdown.ParameterYaml.Aliases] = string.Join(", ", parameter.Aliases),
            };
            if (parameter.AcceptedValues.Count > 0)
                values[Markdown.ParameterYaml.AcceptedValues] = string.Join(", ", parameter.AcceptedValues);
            values[Markdown.ParameterYaml.Required] = binding.IsMandatory ? "True" : "False";
            values[Markdown.ParameterYaml.Position] = binding.Position?.ToString(System.Globalization.CultureInfo.InvariantCulture) ?? "Named";
            values[Markdown.ParameterYaml.DefaultValue] = string.IsNullOrWhiteSpace(defaultValue) ? (parameter.IsSwitch ? "False" : "None") : defaultValue;
            values[Markdown.ParameterYaml.PipelineInput] = PipelineInput(binding.ValueFromPipeline, binding.ValueFromPipelineByPropertyName);
            values[Markdown.ParameterYaml.Wildcards] = parameter.SupportsWildcards ? "True" : "False";
            blocks.Add(new ParameterYaml(values));
        }
        return blocks;
    }
}
