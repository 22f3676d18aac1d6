using Markdig;
using Markdig.Extensions.Yaml;
using Markdig.Syntax;

namespace OdaKvmBackup.HelpBuilder.Markdown;

/// <summary>A heading, the blocks under it up to its first sub-heading, and its sub-headings.</summary>
public sealed class Section
{
    public required int Level { get; init; }
    public required string Title { get; init; }
    public required HeadingBlock Heading { get; init; }
    public List<Block> Blocks { get; } = [];
    public List<Section> Children { get; } = [];
    /// <summary>Offset of the heading's first character in the source.</summary>
    public int Start => Heading.Span.Start;
    /// <summary>Offset just past the section: the next heading of the same or a higher level, or the end of the text.</summary>
    public int End { get; internal set; }
    /// <summary>Offset just past the heading line (its newline included when there is one).</summary>
    public int BodyStart { get; internal set; }

    public string Key => Title.Trim().ToUpperInvariant();

    public Section? Child(string title) =>
        Children.FirstOrDefault(c => string.Equals(c.Title.Trim(), title, StringComparison.OrdinalIgnoreCase));
}

/// <summary>A markdown file parsed by Markdig: front matter, the headings as a tree, and the source for offsets.</summary>
public sealed class MarkdownOutline
{
    private static readonly MarkdownPipeline Pipeline = new MarkdownPipelineBuilder()
        .UseYamlFrontMatter()
        .UsePreciseSourceLocation()
        .Build();

    public required string Source { get; init; }
    public required MarkdownDocument Document { get; init; }
    public YamlFrontMatterBlock? FrontMatter { get; init; }
    /// <summary>Top-level headings (normally one "# Name").</summary>
    public required IReadOnlyList<Section> Sections { get; init; }
    /// <summary>Blocks before the first heading, front matter excluded.</summary>
    public required IReadOnlyList<Block> Preamble { get; init; }

    /// <summary>The level-2 sections, wherever the level-1 heading is.</summary>
    public IEnumerable<Section> TopSections =>
        Sections.SelectMany(s => s.Level == 1 ? s.Children : [s]);

    public Section? Find(string title) =>
        TopSections.FirstOrDefault(s => string.Equals(s.Key, title, StringComparison.OrdinalIgnoreCase));

    /// <summary>Line endings are made "\n" first, so that offsets work the same on every file (a page that update rewrites keeps "\n").</summary>
    public static string NormalizeNewlines(string text) => text.Replace("\r\n", "\n", StringComparison.Ordinal).Replace('\r', '\n');

    public static MarkdownOutline Parse(string text)
    {
        string source = NormalizeNewlines(text);
        var document = Markdig.Markdown.Parse(source, Pipeline);
        var roots = new List<Section>();
        var preamble = new List<Block>();
        var open = new Stack<Section>();
        var all = new List<Section>();
        YamlFrontMatterBlock? frontMatter = null;
        foreach (var block in document)
        {
            if (block is YamlFrontMatterBlock yaml)
            {
                frontMatter = yaml;
                continue;
            }
            if (block is HeadingBlock heading)
            {
                var section = new Section { Level = heading.Level, Title = PlainText.Of(heading.Inline), Heading = heading };
                section.BodyStart = LineEnd(source, heading.Span.End);
                while (open.Count > 0 && open.Peek().Level >= heading.Level) open.Pop();
                if (open.Count == 0) roots.Add(section);
                else open.Peek().Children.Add(section);
                open.Push(section);
                all.Add(section);
                continue;
            }
            if (open.Count == 0) preamble.Add(block);
            else open.Peek().Blocks.Add(block);
        }
        for (int i = 0; i < all.Count; i++)
        {
            var next = all.Skip(i + 1).FirstOrDefault(s => s.Level <= all[i].Level);
            all[i].End = next?.Start ?? source.Length;
        }
        return new MarkdownOutline { Source = source, Document = document, FrontMatter = frontMatter, Sections = roots, Preamble = preamble };
    }

    private static int LineEnd(string source, int lastCharOfBlock)
    {
        int newline = source.IndexOf('\n', Math.Min(lastCharOfBlock, source.Length));
        return newline < 0 ? source.Length : newline + 1;
    }
}
