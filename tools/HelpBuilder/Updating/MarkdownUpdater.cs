using System.Text;
using OdaKvmBackup.HelpBuilder.Checking;
using OdaKvmBackup.HelpBuilder.Facts;
using OdaKvmBackup.HelpBuilder.Markdown;

namespace OdaKvmBackup.HelpBuilder.Updating;

/// <summary>
/// Brings a page in line with its cmdlet, as PlatyPS's Update-MarkdownHelp does: SYNTAX and every parameter's yaml
/// block are written from the cmdlet; a parameter the cmdlet lacks loses its section; one the page lacks gets a
/// stub to fill in. Everything else is left byte for byte: edits replace source ranges found by Markdig.
/// </summary>
public static class MarkdownUpdater
{
    public const string CommonParametersText =
        "This cmdlet supports the common parameters: -Debug, -ErrorAction, -ErrorVariable, -InformationAction, -InformationVariable, -OutVariable, -OutBuffer, -PipelineVariable, -ProgressAction, -Verbose, -WarningAction, and -WarningVariable. For more information, see [about_CommonParameters](http://go.microsoft.com/fwlink/?LinkID=113216).";

    private sealed record Edit(int Start, int End, string Text, string What);

    /// <summary>The page's new text, and what changed (empty when the page already agrees).</summary>
    public static (string Text, IReadOnlyList<string> Changes) Update(CommandPage page, CommandFacts command)
    {
        var outline = page.Outline;
        var edits = new List<Edit>();

        string syntax = CmdletHelp.SyntaxMarkdown(command);
        if (page.SyntaxSection is { } section)
        {
            edits.Add(new Edit(section.BodyStart, section.End, syntax, "SYNTAX"));
        }
        else
        {
            int at = outline.Find(CommandPageParser.DescriptionTitle)?.Start ?? TitleEnd(outline);
            edits.Add(new Edit(at, at, $"## {CommandPageParser.SyntaxTitle}\n{syntax}", "SYNTAX added"));
        }

        foreach (var documented in page.Parameters)
        {
            var parameter = command.FindParameter(documented.Name);
            if (parameter is null)
            {
                edits.Add(new Edit(documented.Section.Start, documented.Section.End, "", $"-{documented.Name} removed"));
                continue;
            }
            string? defaultValue = documented.Yaml.Select(y => y[ParameterYaml.DefaultValue]).FirstOrDefault();
            var expected = CmdletHelp.YamlBlocks(command, parameter, defaultValue);
            var blocks = documented.YamlBlocks;
            string what = $"-{parameter.Name} yaml";
            if (blocks.Count == 0)
            {
                edits.Add(new Edit(documented.Section.End, documented.Section.End, YamlMarkdown(expected) + "\n\n", what + " added"));
            }
            else if (blocks.Count == expected.Count)
            {
                for (int i = 0; i < blocks.Count; i++)
                    edits.Add(new Edit(blocks[i].Span.Start, blocks[i].Span.End + 1, YamlMarkdown([expected[i]]), what));
            }
            else
            {
                // Block by block, so that text written between two blocks stays.
                edits.Add(new Edit(blocks[0].Span.Start, blocks[0].Span.End + 1, YamlMarkdown(expected), what));
                foreach (var extra in blocks.Skip(1)) edits.Add(new Edit(extra.Span.Start, SkipNewlines(outline.Source, extra.Span.End + 1), "", what));
            }
        }

        var missing = command.Parameters.Where(p => page.FindParameter(p.Name) is null).ToList();
        if (missing.Count > 0)
        {
            string stubs = string.Concat(missing.Select(p => ParameterStub(command, p)));
            if (page.ParametersSection is { } parameters)
            {
                int at = parameters.Child(CommandPageParser.CommonParametersTitle)?.Start ?? parameters.End;
                edits.Add(new Edit(at, at, stubs, string.Join(", ", missing.Select(p => $"-{p.Name}")) + " added (to fill in)"));
            }
            else
            {
                int at = FirstOf(outline, CommandPageParser.InputsTitle, CommandPageParser.OutputsTitle, CommandPageParser.NotesTitle, CommandPageParser.RelatedLinksTitle);
                edits.Add(new Edit(at, at, $"## {CommandPageParser.ParametersTitle}\n\n{stubs}{CommonParametersSection()}", "PARAMETERS added (to fill in)"));
            }
        }

        var undocumentedOutputs = command.OutputTypes
            .Where(t => !page.Outputs.Any(o => o.TypeName == t || o.TypeName == TypeNames.Short(t))).ToList();
        if (undocumentedOutputs.Count > 0)
        {
            string stubs = string.Concat(undocumentedOutputs.Select(TypeStub));
            if (page.OutputsSection is { } outputs)
            {
                edits.Add(new Edit(outputs.End, outputs.End, stubs, "OUTPUTS entry added (to fill in)"));
            }
            else
            {
                int at = FirstOf(outline, CommandPageParser.NotesTitle, CommandPageParser.RelatedLinksTitle);
                edits.Add(new Edit(at, at, $"## {CommandPageParser.OutputsTitle}\n\n{stubs}", "OUTPUTS added (to fill in)"));
            }
        }

        return Apply(outline.Source, edits);
    }

    private static (string, IReadOnlyList<string>) Apply(string source, List<Edit> edits)
    {
        var text = new StringBuilder(source);
        var changes = new List<string>();
        int limit = int.MaxValue;
        // From the end backwards, so that earlier offsets stay valid; at one offset, a replacement before an insertion.
        foreach (var edit in edits.OrderByDescending(e => e.Start).ThenByDescending(e => e.End - e.Start))
        {
            if (edit.End > limit) throw new InvalidOperationException($"Overlapping edits at {edit.Start}: {edit.What}.");
            limit = edit.Start;
            if (source.AsSpan(edit.Start, edit.End - edit.Start).SequenceEqual(edit.Text)) continue;
            text.Remove(edit.Start, edit.End - edit.Start).Insert(edit.Start, edit.Text);
            changes.Add(edit.What);
        }
        changes.Reverse();
        return (text.ToString(), changes.Distinct().ToList());
    }

    private static int SkipNewlines(string source, int at)
    {
        while (at < source.Length && source[at] == '\n') at++;
        return at;
    }

    /// <summary>Where a new section goes: before the first of these sections the page has, else at its end.</summary>
    private static int FirstOf(MarkdownOutline outline, params string[] titles) =>
        titles.Select(outline.Find).FirstOrDefault(s => s is not null)?.Start ?? outline.Source.Length;

    private static int TitleEnd(MarkdownOutline outline) =>
        outline.Sections.FirstOrDefault(s => s.Level == 1)?.BodyStart ?? 0;

    public static string YamlMarkdown(IEnumerable<ParameterYaml> blocks) =>
        string.Join("\n\n", blocks.Select(b => $"```yaml\n{b.ToYaml()}```"));

    public static string ParameterStub(CommandFacts command, ParameterFacts parameter) =>
        $"### -{parameter.Name}\n{HelpChecker.StubMarker}: describe -{parameter.Name}. }}}}\n\n{YamlMarkdown(CmdletHelp.YamlBlocks(command, parameter, null))}\n\n";

    private static string TypeStub(string typeName) =>
        $"### {typeName}\n{HelpChecker.StubMarker}: describe what the cmdlet writes. }}}}\n\n";

    private static string CommonParametersSection() =>
        $"### {CommandPageParser.CommonParametersTitle}\n{CommonParametersText}\n\n";

    /// <summary>A page for a cmdlet that has none: every fact from the cmdlet, every text a stub that the check rejects.</summary>
    public static string NewPage(CommandFacts command, string moduleName)
    {
        string stub = HelpChecker.StubMarker;
        var text = new StringBuilder();
        text.Append("---\n")
            .Append("external help file: ").Append(command.HelpFile).Append('\n')
            .Append("Module Name: ").Append(moduleName).Append('\n')
            .Append("online version:\n")
            .Append("schema: ").Append(HelpChecker.SchemaVersion).Append('\n')
            .Append("---\n\n")
            .Append("# ").Append(command.Name).Append("\n\n")
            .Append("## SYNOPSIS\n").Append(stub).Append(": one sentence on what the cmdlet does. }}\n\n")
            .Append("## SYNTAX\n").Append(CmdletHelp.SyntaxMarkdown(command))
            .Append("## DESCRIPTION\n").Append(stub).Append(": what it does, what it changes, its errors. }}\n\n")
            .Append("## EXAMPLES\n\n### Example 1: ").Append(stub).Append(" }}\n```powershell\n").Append(stub).Append(" }}\n```\n\n")
            .Append(stub).Append(": what the example shows. }}\n\n")
            .Append("## PARAMETERS\n\n");
        foreach (var parameter in command.Parameters) text.Append(ParameterStub(command, parameter));
        text.Append(CommonParametersSection())
            .Append("## INPUTS\n\n")
            .Append("## OUTPUTS\n\n");
        foreach (string output in command.OutputTypes) text.Append(TypeStub(output));
        text.Append("## NOTES\n\n")
            .Append("## RELATED LINKS\n\n")
            .Append("[about_").Append(moduleName).Append("](about_").Append(moduleName).Append(".md)\n");
        return text.ToString();
    }
}
