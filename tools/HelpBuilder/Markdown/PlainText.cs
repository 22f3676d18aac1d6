using System.Text;
using Markdig.Syntax;
using Markdig.Syntax.Inlines;

namespace OdaKvmBackup.HelpBuilder.Markdown;

/// <summary>A piece of rendered text; a code span is one unbreakable run, so wrapping never splits a command.</summary>
public readonly record struct TextRun(string Text, bool Unbreakable);

/// <summary>
/// Markdown as the plain text Get-Help prints: emphasis markers go, `code` keeps its backticks (it marks commands
/// and paths), a link becomes its text, followed by "(url)" when it points outside the help.
/// </summary>
public static class PlainText
{
    public static string Of(ContainerInline? inline) => string.Concat(Runs(inline).Select(r => r.Text)).Trim();

    /// <summary>The text of a link, without its address.</summary>
    public static string LabelOf(LinkInline link)
    {
        var runs = new List<TextRun>();
        foreach (var child in link) Walk(child, runs);
        return string.Concat(runs.Select(r => r.Text)).Trim();
    }

    public static IReadOnlyList<TextRun> Runs(ContainerInline? inline)
    {
        var runs = new List<TextRun>();
        if (inline is not null) Walk(inline, runs);
        return runs;
    }

    private static void Walk(Inline inline, List<TextRun> runs)
    {
        switch (inline)
        {
            case LiteralInline literal:
                runs.Add(new TextRun(literal.Content.ToString(), false));
                break;
            case CodeInline code:
                runs.Add(new TextRun($"`{code.Content}`", true));
                break;
            case LineBreakInline lineBreak:
                runs.Add(new TextRun(lineBreak.IsHard ? "\n" : " ", false));
                break;
            case AutolinkInline autolink:
                runs.Add(new TextRun(autolink.Url, true));
                break;
            case HtmlEntityInline entity:
                runs.Add(new TextRun(entity.Transcoded.ToString(), false));
                break;
            case HtmlInline html:
                runs.Add(new TextRun(html.Tag, false));
                break;
            case LinkInline link:
                int before = runs.Count;
                foreach (var child in link) Walk(child, runs);
                string label = string.Concat(runs.Skip(before).Select(r => r.Text));
                if (!link.IsImage && IsExternal(link.Url) && link.Url != label)
                {
                    runs.Add(new TextRun(" ", false));
                    runs.Add(new TextRun($"({link.Url})", true));
                }
                break;
            case ContainerInline container:
                foreach (var child in container) Walk(child, runs);
                break;
        }
    }

    /// <summary>A link Get-Help can show as an address; links to other pages (Get-VmDisk.md) keep their text only.</summary>
    public static bool IsExternal(string? url) =>
        Uri.TryCreate(url, UriKind.Absolute, out var uri) && uri.Scheme is "http" or "https" or "ftp";

    /// <summary>Blocks as MAML paragraphs: one per paragraph, list or code block.</summary>
    public static List<string> Paragraphs(IEnumerable<Block> blocks, string source)
    {
        var paragraphs = new List<string>();
        foreach (var block in blocks)
        {
            string? text = BlockText(block, source, indent: "");
            if (!string.IsNullOrWhiteSpace(text)) paragraphs.Add(text);
        }
        return paragraphs;
    }

    public static string? BlockText(Block block, string source, string indent) => block switch
    {
        ParagraphBlock paragraph => Of(paragraph.Inline),
        CodeBlock code => Code(code),
        ListBlock list => string.Join("\n", ListLines(list, source, indent)),
        QuoteBlock quote => string.Join("\n", quote.Select(b => BlockText(b, source, indent)).Where(t => !string.IsNullOrWhiteSpace(t))),
        HeadingBlock heading => Of(heading.Inline),
        ThematicBreakBlock => null,
        _ => source.Substring(block.Span.Start, block.Span.Length).Trim(),
    };

    /// <summary>The lines of a code block as written, without the fences.</summary>
    public static string Code(CodeBlock code)
    {
        var text = new StringBuilder();
        for (int i = 0; i < code.Lines.Count; i++)
        {
            if (i > 0) text.Append('\n');
            text.Append(code.Lines.Lines[i].Slice.ToString().TrimEnd());
        }
        return text.ToString().TrimEnd('\n');
    }

    /// <summary>"- item" or "1. item" per item; a nested list is indented under its item.</summary>
    public static IEnumerable<string> ListLines(ListBlock list, string source, string indent)
    {
        int number = list.IsOrdered && int.TryParse(list.OrderedStart, out int start) ? start : 1;
        foreach (var item in list.OfType<ListItemBlock>())
        {
            string marker = list.IsOrdered ? $"{number++}." : "-";
            var text = new List<string>();
            var nested = new List<string>();
            foreach (var child in item)
            {
                if (child is ListBlock sublist) nested.AddRange(ListLines(sublist, source, indent + "  "));
                else if (BlockText(child, source, indent) is { Length: > 0 } t) text.Add(t);
            }
            yield return $"{indent}{marker} {string.Join(" ", text)}";
            foreach (string line in nested) yield return line;
        }
    }

    /// <summary>Words for wrapping: split at white space, except inside unbreakable runs.</summary>
    public static List<string> Words(IEnumerable<TextRun> runs)
    {
        var words = new List<string>();
        var word = new StringBuilder();
        foreach (var run in runs)
        {
            if (run.Unbreakable)
            {
                word.Append(run.Text);
                continue;
            }
            foreach (char c in run.Text)
            {
                if (char.IsWhiteSpace(c))
                {
                    if (word.Length > 0) words.Add(word.ToString());
                    word.Clear();
                }
                else
                {
                    word.Append(c);
                }
            }
        }
        if (word.Length > 0) words.Add(word.ToString());
        return words;
    }

    /// <summary>Words filled into lines of at most <paramref name="width"/> characters (a longer word gets a line of its own).</summary>
    public static List<string> Wrap(IEnumerable<string> words, int width, int indent, int hangingIndent)
    {
        var lines = new List<string>();
        var line = new StringBuilder(new string(' ', indent));
        bool empty = true;
        foreach (string word in words)
        {
            if (!empty && line.Length + 1 + word.Length > width)
            {
                lines.Add(line.ToString());
                line.Clear().Append(' ', hangingIndent).Append(word);
            }
            else
            {
                if (!empty) line.Append(' ');
                line.Append(word);
                empty = false;
            }
        }
        if (!empty) lines.Add(line.ToString());
        return lines;
    }
}
