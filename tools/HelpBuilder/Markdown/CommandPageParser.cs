using Markdig.Syntax;
using Markdig.Syntax.Inlines;
using YamlDotNet.Core;
using YamlDotNet.Serialization;

namespace OdaKvmBackup.HelpBuilder.Markdown;

/// <summary>Reads a cmdlet page by walking Markdig's syntax tree; YAML (front matter, parameter blocks) goes to YamlDotNet.</summary>
public static class CommandPageParser
{
    public const string Synopsis = "SYNOPSIS";
    public const string SyntaxTitle = "SYNTAX";
    public const string DescriptionTitle = "DESCRIPTION";
    public const string ExamplesTitle = "EXAMPLES";
    public const string ParametersTitle = "PARAMETERS";
    public const string InputsTitle = "INPUTS";
    public const string OutputsTitle = "OUTPUTS";
    public const string NotesTitle = "NOTES";
    public const string RelatedLinksTitle = "RELATED LINKS";
    public const string CommonParametersTitle = "CommonParameters";

    private static readonly IDeserializer FrontMatterReader = new DeserializerBuilder().Build();

    public static CommandPage Load(string path) => Parse(path, File.ReadAllText(path));

    public static CommandPage Parse(string path, string text)
    {
        var outline = MarkdownOutline.Parse(text);
        var problems = new List<string>();
        string source = outline.Source;

        var frontMatter = ReadFrontMatter(outline, problems);
        var titles = outline.Sections.Where(s => s.Level == 1).ToList();
        if (titles.Count != 1) problems.Add("needs exactly one \"# <CmdletName>\" heading");
        if (outline.Preamble.Count > 0) problems.Add("has text before its first heading");
        foreach (var duplicate in outline.TopSections.GroupBy(s => s.Key).Where(g => g.Count() > 1))
            problems.Add($"has the section '## {duplicate.First().Title}' {duplicate.Count()} times");

        var syntax = outline.Find(SyntaxTitle);
        var parameters = outline.Find(ParametersTitle);
        var outputs = outline.Find(OutputsTitle);
        return new CommandPage
        {
            Path = path,
            Outline = outline,
            Title = titles.Count == 1 ? titles[0].Title : null,
            FrontMatter = frontMatter,
            Synopsis = SectionText(outline.Find(Synopsis), source),
            Description = SectionText(outline.Find(DescriptionTitle), source),
            SyntaxSection = syntax,
            Syntax = syntax is null ? [] : ReadSyntax(syntax),
            Examples = ReadExamples(outline.Find(ExamplesTitle), source, problems),
            ParametersSection = parameters,
            Parameters = ReadParameters(parameters, source, problems),
            Inputs = ReadTypes(outline.Find(InputsTitle), source),
            OutputsSection = outputs,
            Outputs = ReadTypes(outputs, source),
            Notes = SectionText(outline.Find(NotesTitle), source),
            RelatedLinks = ReadLinks(outline.Find(RelatedLinksTitle)),
            Problems = problems,
        };
    }

    private static Dictionary<string, string?>? ReadFrontMatter(MarkdownOutline outline, List<string> problems)
    {
        if (outline.FrontMatter is null) return null;
        // The block's lines include the --- fences; YamlDotNet reads the lines between them.
        var lines = Enumerable.Range(0, outline.FrontMatter.Lines.Count)
            .Select(i => outline.FrontMatter.Lines.Lines[i].Slice.ToString())
            .Where(l => l.Trim() != "---");
        try
        {
            return FrontMatterReader.Deserialize<Dictionary<string, string?>>(string.Join("\n", lines)) ?? [];
        }
        catch (YamlException e)
        {
            problems.Add($"front matter is not YAML: {e.Message}");
            return [];
        }
    }

    /// <summary>The paragraphs of a section, its sub-sections included (a NOTES section may have headings).</summary>
    private static List<string> SectionText(Section? section, string source)
    {
        if (section is null) return [];
        var paragraphs = PlainText.Paragraphs(section.Blocks, source);
        foreach (var child in section.Children)
        {
            paragraphs.Add(child.Title);
            paragraphs.AddRange(SectionText(child, source));
        }
        return paragraphs;
    }

    private static List<(string, string)> ReadSyntax(Section syntax)
    {
        var blocks = new List<(string, string)>();
        blocks.AddRange(syntax.Blocks.OfType<CodeBlock>().Select(c => ("", PlainText.Code(c))));
        foreach (var set in syntax.Children)
        {
            string name = set.Title.Replace("(Default)", "", StringComparison.OrdinalIgnoreCase).Trim();
            blocks.AddRange(set.Blocks.OfType<CodeBlock>().Select(c => (name, PlainText.Code(c))));
        }
        return blocks;
    }

    /// <summary>"### Example N: title": the code blocks it starts with are the code, the rest are remarks.</summary>
    private static List<ExampleSection> ReadExamples(Section? examples, string source, List<string> problems)
    {
        var result = new List<ExampleSection>();
        if (examples is null) return result;
        foreach (var example in examples.Children)
        {
            var code = example.Blocks.TakeWhile(b => b is CodeBlock).Cast<CodeBlock>().Select(PlainText.Code).ToList();
            var remarks = PlainText.Paragraphs(example.Blocks.SkipWhile(b => b is CodeBlock), source);
            if (code.Count == 0) problems.Add($"example '{example.Title}' does not start with a code block");
            result.Add(new ExampleSection(example.Title, code, remarks));
        }
        return result;
    }

    private static List<ParameterSection> ReadParameters(Section? parameters, string source, List<string> problems)
    {
        var result = new List<ParameterSection>();
        if (parameters is null) return result;
        foreach (var section in parameters.Children)
        {
            string title = section.Title.Trim();
            if (title == CommonParametersTitle) continue;
            if (!title.StartsWith('-') || title.Length < 2 || title.Skip(1).Any(c => !char.IsLetterOrDigit(c) && c != '_'))
            {
                problems.Add($"parameter heading '### {title}' should be '### -Name'");
                continue;
            }
            var yamlBlocks = section.Blocks.OfType<FencedCodeBlock>().Where(IsYaml).ToList();
            var yaml = new List<ParameterYaml>();
            foreach (var block in yamlBlocks)
            {
                try
                {
                    yaml.Add(ParameterYaml.Parse(PlainText.Code(block)));
                }
                catch (YamlException e)
                {
                    problems.Add($"{title}: the yaml block is not YAML: {e.Message}");
                }
            }
            var description = PlainText.Paragraphs(section.Blocks.Where(b => !(b is FencedCodeBlock f && IsYaml(f))), source);
            result.Add(new ParameterSection(title[1..], section, description, yaml, yamlBlocks));
        }
        return result;
    }

    private static bool IsYaml(FencedCodeBlock block) => string.Equals(block.Info?.Trim(), "yaml", StringComparison.OrdinalIgnoreCase);

    private static List<TypeSection> ReadTypes(Section? section, string source) =>
        section is null ? [] : section.Children.Select(c => new TypeSection(c.Title.Trim(), SectionText(c, source))).ToList();

    /// <summary>Each link, or each line of plain text, of RELATED LINKS; addresses only for links outside the help.</summary>
    private static List<RelatedLink> ReadLinks(Section? section)
    {
        var links = new List<RelatedLink>();
        if (section is null) return links;
        var paragraphs = section.Blocks.SelectMany<Block, Block>(b => b is ContainerBlock container ? container.Descendants<ParagraphBlock>() : [b]);
        foreach (var paragraph in paragraphs.OfType<ParagraphBlock>())
        {
            var found = paragraph.Inline?.Descendants<LinkInline>().Where(l => !l.IsImage).ToList() ?? [];
            if (found.Count == 0)
            {
                if (PlainText.Of(paragraph.Inline) is { Length: > 0 } text) links.Add(new RelatedLink(text, ""));
                continue;
            }
            foreach (var link in found)
                links.Add(new RelatedLink(PlainText.LabelOf(link), PlainText.IsExternal(link.Url) ? link.Url! : ""));
        }
        return links;
    }
}
