using OdaKvmBackup.HelpBuilder.Facts;
using OdaKvmBackup.HelpBuilder.Markdown;

namespace OdaKvmBackup.HelpBuilder.Tests.Support;

/// <summary>The files under Fixtures/ (copied beside the test assembly).</summary>
internal static class Fixture
{
    public static string Path(params string[] parts) => System.IO.Path.Combine([AppContext.BaseDirectory, "Fixtures", .. parts]);

    public static string Read(params string[] parts) => File.ReadAllText(Path(parts));

    /// <summary>The Sample module's cmdlets, in the shape Export-CommandMetadata.ps1 writes.</summary>
    public static ModuleFacts Sample => ModuleFacts.Load(Path("Sample.facts.json"));

    public static CommandFacts SampleCommand(string name) => Sample.Commands.Single(c => c.Name == name);

    public static CommandPage Page(string folder, string name) => CommandPageParser.Load(Path(folder, name + ".md"));

    /// <summary>A copy of a fixture folder that a test may change.</summary>
    public static TempFolder CopyOf(string folder)
    {
        var copy = new TempFolder();
        foreach (string file in Directory.EnumerateFiles(Path(folder)))
            File.Copy(file, copy.Combine(System.IO.Path.GetFileName(file)));
        return copy;
    }
}
