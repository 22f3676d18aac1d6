using Markdig.Syntax;

namespace OdaKvmBackup.HelpBuilder.Markdown;

/// <summary>A cmdlet's page in PlatyPS's schema 2.0.0, as read from docs/help/&lt;Verb-Noun&gt;.md.</summary>
public sealed class CommandPage
{
    public required string Path { get; init; }
    public required MarkdownOutline Outline { get; init; }
    /// <summary>The file name without .md: the cmdlet this page is meant for.</summary>
    public string Name => System.IO.Path.GetFileNameWithoutExtension(Path);
    /// <summary>The "# Name" heading.</summary>
    public string? Title { get; init; }
    public IReadOnlyDictionary<string, string?>? FrontMatter { get; init; }
    public IReadOnlyList<string> Synopsis { get; init; } = [];
    public IReadOnlyList<string> Description { get; init; } = [];
    public Section? SyntaxSection { get; init; }
    /// <summary>Each syntax code block with the set heading above it ("" when the section has no set headings).</summary>
    public IReadOnlyList<(string SetName, string Text)> Syntax { get; init; } = [];
    public IReadOnlyList<ExampleSection> Examples { get; init; } = [];
    public Section? ParametersSection { get; init; }
    public IReadOnlyList<ParameterSection> Parameters { get; init; } = [];
    public IReadOnlyList<TypeSection> Inputs { get; init; } = [];
    public Section? OutputsSection { get; init; }
    public IReadOnlyList<TypeSection> Outputs { get; init; } = [];
    public IReadOnlyList<string> Notes { get; init; } = [];
    public IReadOnlyList<RelatedLink> RelatedLinks { get; init; } = [];
    /// <summary>What the page gets wrong on its own (no cmdlet needed to see it).</summary>
    public IReadOnlyList<string> Problems { get; init; } = [];

    public string? OnlineVersion => FrontMatter?.GetValueOrDefault("online version");

    public ParameterSection? FindParameter(string name) =>
        Parameters.FirstOrDefault(p => string.Equals(p.Name, name, StringComparison.OrdinalIgnoreCase));
}

public sealed record ExampleSection(string Title, IReadOnlyList<string> Code, IReadOnlyList<string> Remarks);

/// <summary>"### -Name": its description and its ```yaml blocks (one per group of parameter sets).</summary>
public sealed record ParameterSection(string Name, Section Section, IReadOnlyList<string> Description,
    IReadOnlyList<ParameterYaml> Yaml, IReadOnlyList<FencedCodeBlock> YamlBlocks);

/// <summary>An INPUTS or OUTPUTS entry: "### Type.Name" and its text.</summary>
public sealed record TypeSection(string TypeName, IReadOnlyList<string> Description);

public sealed record RelatedLink(string Text, string Uri);
