using Markdig.Syntax;

namespace OdaKvmBackup.HelpBuilder.Markdown;

/// <summary>An about_*.md page, and the about_*.help.txt that Get-Help prints as is.</summary>
public sealed class AboutTopic
{
    public const int Width = 80;
    public const string ShortDescription = "SHORT DESCRIPTION";
    public const string LongDescription = "LONG DESCRIPTION";

    public required string Path { get; init; }
    public required MarkdownOutline Outline { get; init; }
    public string Name => System.IO.Path.GetFileNameWithoutExtension(Path);
    public IReadOnlyList<string> Problems { get; init; } = [];

    public static AboutTopic Load(string path) => Parse(path, File.ReadAllText(path));

    public static AboutTopic Parse(string path, string text)
    {
        var outline = MarkdownOutline.Parse(text);
        var topic = new AboutTopic { Path = path, Outline = outline };
        var problems = new List<string>();
        var titles = outline.Sections.Where(s => s.Level == 1).ToList();
        if (titles.Count != 1 || titles[0].Title != topic.Name) problems.Add($"needs exactly one heading '# {topic.Name}'");
        foreach (string required in new[] { ShortDescription, LongDescription })
        {
            var section = outline.Find(required);
            if (section is null) problems.Add($"has no ## {required}");
            else if (PlainText.Paragraphs(section.Blocks, outline.Source).Count == 0) problems.Add($"has an empty ## {required}");
        }
        return new AboutTopic { Path = path, Outline = outline, Problems = problems };
    }

    /// <summary>
    /// The text Get-Help shows: "TOPIC", then each heading (## in capitals, ### indented by 2) with its text
    /// indented by 4 and wrapped at <see cref="Width"/> columns; code indented by 8 and never wrapped.
    /// </summary>
    public string ToHelpText()
    {
        var lines = new List<string> { "TOPIC", $"    {Name}" };
        foreach (var section in Outline.TopSections) AddSection(section, lines);
        return string.Join("\n", lines).TrimEnd() + "\n";
    }

    private void AddSection(Section section, List<string> lines)
    {
        lines.Add("");
        lines.Add(section.Level switch
        {
            <= 2 => section.Title.ToUpperInvariant(),
            3 => "  " + section.Title,
            _ => "    " + section.Title,
        });
        bool first = true;
        foreach (var block in section.Blocks)
        {
            var text = BlockLines(block);
            if (text.Count == 0) continue;
            // The text starts on the line after its heading; blocks are separated by a blank line.
            if (!first) lines.Add("");
            first = false;
            lines.AddRange(text);
        }
        foreach (var child in section.Children) AddSection(child, lines);
    }

    private List<string> BlockLines(Block block, int indent = 4)
    {
        switch (block)
        {
            case ParagraphBlock paragraph:
                return PlainText.Wrap(PlainText.Words(PlainText.Runs(paragraph.Inline)), Width, indent, indent);
            case CodeBlock code:
                return PlainText.Code(code).Split('\n').Select(l => (new string(' ', indent + 4) + l).TrimEnd()).ToList();
            case ListBlock list:
                return ListLines(list, indent);
            case ThematicBreakBlock:
                return [];
            default:
                return PlainText.BlockText(block, Outline.Source, "") is { Length: > 0 } text
                    ? PlainText.Wrap(text.Split(' '), Width, indent, indent)
                    : [];
        }
    }

    /// <summary>Each item wrapped with a hanging indent under its text; a nested list goes 2 further in.</summary>
    private List<string> ListLines(ListBlock list, int indent)
    {
        var lines = new List<string>();
        int number = list.IsOrdered && int.TryParse(list.OrderedStart, out int start) ? start : 1;
        foreach (var item in list.OfType<ListItemBlock>())
        {
            string marker = list.IsOrdered ? $"{number++}." : "-";
            var words = new List<string> { marker };
            var after = new List<string>();
            foreach (var child in item)
            {
                if (child is ParagraphBlock paragraph && after.Count == 0) words.AddRange(PlainText.Words(PlainText.Runs(paragraph.Inline)));
                else after.AddRange(child is ListBlock sublist ? ListLines(sublist, indent + marker.Length + 1) : BlockLines(child, indent + marker.Length + 1));
            }
            lines.AddRange(PlainText.Wrap(words, Width, indent, indent + marker.Length + 1));
            lines.AddRange(after);
        }
        return lines;
    }
}
