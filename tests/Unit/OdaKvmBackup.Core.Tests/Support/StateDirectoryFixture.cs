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
        foreach (var file in Directory.EnumerateFiles(Root))
            File.Delete(file); // left by BreakJournalFolder or StateFolderIsAFile
    }

    /// <summary>Puts a regular file where the journal folder goes, so every journal write from now on fails, as
    /// on a full or read-only state folder (the tests run as root, which ignores permission bits). A journal
    /// written before is moved aside, out of the module's sight.</summary>
    public void BreakJournalFolder()
    {
        if (Directory.Exists(StateDirectory.JournalDirectory))
            Directory.Move(StateDirectory.JournalDirectory, StateDirectory.JournalDirectory + ".aside");
        File.WriteAllText(StateDirectory.JournalDirectory, "not a folder");
    }

    /// <summary>Points the state folder at a regular file until disposed: neither a journal nor a lock can be made.</summary>
    public IDisposable StateFolderIsAFile()
    {
        var file = Path.Combine(Root, "state-is-a-file");
        File.WriteAllText(file, "not a folder");
        Environment.SetEnvironmentVariable(StateDirectory.EnvironmentVariable, file);
        return new RestoreRoot(Root);
    }

    private sealed class RestoreRoot(string root) : IDisposable
    {
        public void Dispose() => Environment.SetEnvironmentVariable(StateDirectory.EnvironmentVariable, root);
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
