namespace OdaKvmBackup.Core.Tests.Support;

/// <summary>Reads the files under Fixtures/ (copied beside the test assembly).</summary>
internal static class Fixture
{
    public static string Path(string name) => System.IO.Path.Combine(AppContext.BaseDirectory, "Fixtures", name);

    public static string Read(string name) => File.ReadAllText(Path(name));
}
