using OdaKvmBackup.Core.Safety;

namespace OdaKvmBackup.Core.Tests.Support;

/// <summary>
/// Points ODAKVMBACKUP_STATE_DIR at a temp folder for the tests that use the journal or the domain locks, so
/// that none of them touches /var/lib/odakvmbackup. The variable is process-wide: every class using it belongs
/// to <see cref="StateDirectoryCollection"/>, whose tests never run in parallel.
/// </summary>
public sealed class StateDirectoryFixture : IDisposable
{
    private readonly string? _previous;
    private readonly TempFolder _folder = new("odakvmbackup-state");

    public StateDirectoryFixture()
    {
        _previous = Environment.GetEnvironmentVariable(StateDirectory.EnvironmentVariable);
        Environment.SetEnvironmentVariable(StateDirectory.EnvironmentVariable, _folder.FullPath);
    }

    public string Root => _folder.FullPath;

    /// <summary>Starts a test from a host that never ran a backup.</summary>
    public void Reset()
    {
        Assert.Equal(Root, StateDirectory.Root);
        foreach (var dir in Directory.EnumerateDirectories(Root))
            Directory.Delete(dir, recursive: true);
    }

    public void Dispose()
    {
        Environment.SetEnvironmentVariable(StateDirectory.EnvironmentVariable, _previous);
        _folder.Dispose();
    }
}

[CollectionDefinition(Name)]
public sealed class StateDirectoryCollection : ICollectionFixture<StateDirectoryFixture>
{
    public const string Name = "State directory";
}
