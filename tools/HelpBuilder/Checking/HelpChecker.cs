using OdaKvmBackup.HelpBuilder.Facts;
using OdaKvmBackup.HelpBuilder.Markdown;

namespace OdaKvmBackup.HelpBuilder.Checking;

public sealed record Finding(string Path, string Message)
{
    public override string ToString() => $"{Path}: {Message}";
}

/// <summary>Every way docs/help and the cmdlets disagree, and every page that is not finished.</summary>
public static class HelpChecker
{
    /// <summary>What the update mode writes where a person has to write: a page that still has it fails the check.</summary>
    public const string StubMarker = "{{ TODO";

    public const string SchemaVersion = "2.0.0";

    public static List<Finding> Check(HelpFolder help, ModuleFacts module)
    {
        var findings = new List<Finding>();
        foreach (var command in module.Commands)
        {
            if (help.FindPage(command.Name) is null)
                findings.Add(new(Path.Combine(help.Path, command.Name + ".md"), $"{command.Name} has no page: './build.ps1 -Task UpdateHelp' writes one to fill in"));
        }
        foreach (var page in help.Pages)
        {
            var command = module.Commands.FirstOrDefault(c => string.Equals(c.Name, page.Name, StringComparison.OrdinalIgnoreCase));
            if (command is null)
            {
                findings.Add(new(page.Path, $"{module.ModuleName} has no cmdlet {page.Name}: rename or delete the page"));
                continue;
            }
            findings.AddRange(CheckPage(page, command, module.ModuleName).Select(m => new Finding(page.Path, m)));
        }
        foreach (var topic in help.AboutTopics)
            findings.AddRange(topic.Problems.Select(p => new Finding(topic.Path, p)));
        string moduleTopic = $"about_{module.ModuleName}";
        if (!help.AboutTopics.Any(t => string.Equals(t.Name, moduleTopic, StringComparison.OrdinalIgnoreCase)))
            findings.Add(new(Path.Combine(help.Path, moduleTopic + ".md"), $"the module has no {moduleTopic} topic"));
        return findings;
    }

    public static IEnumerable<string> CheckPage(CommandPage page, CommandFacts command, string moduleName)
    {
        foreach (string problem in page.Problems) yield return problem;
        foreach (string problem in CheckFrontMatter(page, command, moduleName)) yield return problem;
        if (page.Title is not null && page.Title != command.Name)
            yield return $"the heading '# {page.Title}' is not the cmdlet's name {command.Name}";

        foreach (string problem in CheckText(page.Synopsis, $"## {CommandPageParser.Synopsis}")) yield return problem;
        foreach (string problem in CheckText(page.Description, $"## {CommandPageParser.DescriptionTitle}")) yield return problem;
        if (page.Examples.Count == 0)
            yield return $"has no example (## {CommandPageParser.ExamplesTitle} with a '### Example 1: ...' that starts with code)";
        foreach (var example in page.Examples)
        {
            if (example.Code.Any(c => c.Contains(StubMarker, StringComparison.Ordinal)) || example.Remarks.Any(r => r.Contains(StubMarker, StringComparison.Ordinal)))
                yield return $"example '{example.Title}' is still the stub";
        }

        foreach (string problem in CheckSyntax(page, command)) yield return problem;
        foreach (string problem in CheckParameters(page, command)) yield return problem;

        foreach (string output in command.OutputTypes)
        {
            if (!page.Outputs.Any(o => o.TypeName == output || o.TypeName == TypeNames.Short(output)))
                yield return $"[OutputType] {output} is not under ## {CommandPageParser.OutputsTitle}";
        }
        foreach (var section in page.Inputs.Concat(page.Outputs))
        {
            if (section.Description.Any(d => d.Contains(StubMarker, StringComparison.Ordinal)))
                yield return $"'### {section.TypeName}' still has the stub text";
        }
        if (page.Notes.Any(n => n.Contains(StubMarker, StringComparison.Ordinal)))
            yield return $"## {CommandPageParser.NotesTitle} still has the stub text";
    }

    private static IEnumerable<string> CheckFrontMatter(CommandPage page, CommandFacts command, string moduleName)
    {
        if (page.FrontMatter is null)
        {
            yield return "has no front matter (--- external help file: ... ---)";
            yield break;
        }
        var expected = new Dictionary<string, string>
        {
            ["external help file"] = command.HelpFile,
            ["Module Name"] = moduleName,
            ["schema"] = SchemaVersion,
        };
        foreach (var (key, value) in expected)
        {
            string? actual = page.FrontMatter.GetValueOrDefault(key);
            if (actual != value) yield return $"front matter '{key}: {actual}' should be '{key}: {value}'";
        }
    }

    private static IEnumerable<string> CheckText(IReadOnlyList<string> paragraphs, string where)
    {
        if (paragraphs.Count == 0) yield return $"{where} is missing or empty";
        else if (paragraphs.Any(p => p.Contains(StubMarker, StringComparison.Ordinal))) yield return $"{where} is still the stub";
    }

    private static IEnumerable<string> CheckSyntax(CommandPage page, CommandFacts command)
    {
        if (page.SyntaxSection is null)
        {
            yield return $"has no ## {CommandPageParser.SyntaxTitle}";
            yield break;
        }
        var expected = CmdletHelp.Syntax(command);
        var actual = page.Syntax.Select(s => (s.SetName, Text: CollapseWhiteSpace(s.Text))).ToList();
        foreach (var (set, line) in expected)
        {
            var found = actual.Where(a => string.Equals(a.SetName, set, StringComparison.OrdinalIgnoreCase)).ToList();
            string where = set.Length == 0 ? "SYNTAX" : $"SYNTAX of set {set}";
            if (found.Count == 0) yield return $"{where} is missing; the cmdlet's is: {line}";
            else if (found.Count > 1 || found[0].Text != line) yield return $"{where} differs from the cmdlet's: {line}";
        }
        foreach (var (set, _) in actual.Where(a => !expected.Any(e => string.Equals(e.SetName, a.SetName, StringComparison.OrdinalIgnoreCase))))
            yield return $"SYNTAX has a block for the set '{set}', which the cmdlet does not have";
    }

    private static string CollapseWhiteSpace(string text) =>
        string.Join(" ", text.Split((char[]?)null, StringSplitOptions.RemoveEmptyEntries));

    private static IEnumerable<string> CheckParameters(CommandPage page, CommandFacts command)
    {
        if (page.ParametersSection is null && command.Parameters.Count > 0)
            yield return $"has no ## {CommandPageParser.ParametersTitle}";
        foreach (var duplicate in page.Parameters.GroupBy(p => p.Name, StringComparer.OrdinalIgnoreCase).Where(g => g.Count() > 1))
            yield return $"documents -{duplicate.Key} {duplicate.Count()} times";
        foreach (var section in page.Parameters)
        {
            var parameter = command.FindParameter(section.Name);
            if (parameter is null)
            {
                yield return $"documents -{section.Name}, which {command.Name} does not have";
                continue;
            }
            if (parameter.Name != section.Name)
                yield return $"'### -{section.Name}' should be spelt '### -{parameter.Name}'";
            foreach (string problem in CheckText(section.Description, $"the description of -{parameter.Name}")) yield return problem;
            foreach (string problem in CheckYaml(command, parameter, section)) yield return problem;
        }
        foreach (var parameter in command.Parameters.Where(p => page.FindParameter(p.Name) is null))
            yield return $"-{parameter.Name} of {command.Name} is not documented";
    }

    /// <summary>Each yaml block against the one the cmdlet implies, value by value (the default value is the page's own).</summary>
    private static IEnumerable<string> CheckYaml(CommandFacts command, ParameterFacts parameter, ParameterSection section)
    {
        if (section.YamlBlocks.Count == 0)
        {
            yield return $"-{parameter.Name} has no ```yaml block";
            yield break;
        }
        string? defaultValue = section.Yaml.Select(y => y[ParameterYaml.DefaultValue]).FirstOrDefault();
        var expected = CmdletHelp.YamlBlocks(command, parameter, defaultValue);
        string SetsOf(ParameterYaml y) => ParameterYaml.Normalize(ParameterYaml.ParameterSets, y[ParameterYaml.ParameterSets]);
        var expectedSets = expected.Select(SetsOf).ToList();
        var actualSets = section.Yaml.Select(SetsOf).ToList();
        if (!expectedSets.Order().SequenceEqual(actualSets.Order()))
        {
            yield return $"-{parameter.Name}: the yaml blocks are for the sets [{string.Join("; ", actualSets)}], the cmdlet's for [{string.Join("; ", expectedSets)}]";
            yield break;
        }
        foreach (var want in expected)
        {
            var have = section.Yaml.First(y => SetsOf(y) == SetsOf(want));
            foreach (string key in ParameterYaml.CmdletKeys.Where(want.Has))
            {
                if (!have.Has(key))
                    yield return $"-{parameter.Name}: the yaml block has no '{key}' (the cmdlet's: {want[key]})";
                else if (ParameterYaml.Normalize(key, have[key]) != ParameterYaml.Normalize(key, want[key]))
                    yield return $"-{parameter.Name}: the yaml says '{key}: {have[key]}', the cmdlet '{key}: {want[key]}'";
            }
            foreach (string key in ParameterYaml.CmdletKeys.Where(k => !want.Has(k) && have.Has(k) && !string.IsNullOrWhiteSpace(have[k])))
                yield return $"-{parameter.Name}: the yaml says '{key}: {have[key]}', the cmdlet has none";
        }
    }
}
