namespace OdaKvmBackup.HelpBuilder.Markdown;

/// <summary>docs/help: one page per cmdlet (&lt;Verb-Noun&gt;.md) and about_*.md topics.</summary>
public sealed class HelpFolder
{
    public required string Path { get; init; }
    public required IReadOnlyList<CommandPage> Pages { get; init; }
    public required IReadOnlyList<AboutTopic> AboutTopics { get; init; }

    public static HelpFolder Load(string path)
    {
        if (!Directory.Exists(path)) throw new DirectoryNotFoundException($"The help folder {path} does not exist.");
        var files = Directory.EnumerateFiles(path, "*.md").Order(StringComparer.Ordinal).ToList();
        return new HelpFolder
        {
            Path = path,
            Pages = files.Where(f => !IsAbout(f)).Select(CommandPageParser.Load).ToList(),
            AboutTopics = files.Where(IsAbout).Select(AboutTopic.Load).ToList(),
        };
    }

    public CommandPage? FindPage(string commandName) =>
        Pages.FirstOrDefault(p => string.Equals(p.Name, commandName, StringComparison.OrdinalIgnoreCase));

    private static bool IsAbout(string file) =>
        System.IO.Path.GetFileName(file).StartsWith("about_", StringComparison.OrdinalIgnoreCase);
}
