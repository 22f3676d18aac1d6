using OdaKvmBackup.Core.Tests.Support;

namespace OdaKvmBackup.Core.Tests;

/// <summary>
/// Every path given to a local store stays inside its root (issue 13): a name read from a set that climbs out with
/// '..' or is absolute is refused before anything is read, written, renamed or deleted.
/// </summary>
public sealed class StoreContainmentTests : IDisposable
{
    private readonly TempFolder _temp = new("containment-tests");

    public void Dispose() => _temp.Dispose();

    [Theory]
    [InlineData("../outside")]
    [InlineData("vm/../../outside")]
    [InlineData("vm/run/../../../outside")]
    [InlineData("<absolute>")]
    public async Task A_local_store_refuses_a_path_that_leads_outside_its_root_and_touches_nothing(string path)
    {
        var root = _temp.Folder("store");
        Directory.CreateDirectory(Path.Combine(root, "vm", "run"));
        var outside = _temp.Combine("outside");
        File.WriteAllText(outside, "host file");
        if (path == "<absolute>")
            path = outside;
        var store = new LocalBackupStore(root);
        var ct = CancellationToken.None;

        // Reads first: on a store without the check, the first one already fails the test and nothing is written.
        Func<Task>[] attempts =
        [
            () => store.ReadSmallFileAsync(path, ct),
            () => store.GetEntryAsync(path, ct),
            () => store.OpenReadAsync(path, ct),
            () => store.SegmentDigestsAsync(path, 4096, [0], ct),
            () => store.ListAsync(path, ct),
            () => store.WriteSmallFileAsync(path, "forged"u8.ToArray(), ct),
            () => store.CreateFileAsync(path, ct),
            () => ((IBackupStore)store).OpenForWriteAsync(path, ct),
            () => ((IBackupStore)store).CloneFileAsync(path, "vm/run/new", ct),
            () => ((IBackupStore)store).CloneFileAsync("vm/run/base", path, ct),
            () => store.RenameAsync("vm/run", path, ct),
            () => store.DeleteAsync(path, recursive: true, ct),
            () => Task.FromResult(store.Describe(path)),
        ];
        foreach (var attempt in attempts)
        {
            var ex = await Assert.ThrowsAsync<BackupException>(attempt);
            Assert.Equal(ErrorIds.BackupSetUnreadable, ex.ErrorId);
            Assert.Contains($"'{path}'", ex.Message, StringComparison.Ordinal);
        }

        Assert.Equal("host file", File.ReadAllText(outside));
        Assert.True(Directory.Exists(Path.Combine(root, "vm", "run")));
        Assert.Equal([outside, root], Directory.GetFileSystemEntries(_temp.FullPath).Order(StringComparer.Ordinal));
    }

    /// <summary>The one check every join of a folder and a name from a store goes through.</summary>
    [Theory]
    [InlineData("/restore", "disk", "/restore/disk")]
    [InlineData("/restore/", "disco secundario, 2", "/restore/disco secundario, 2")]
    [InlineData("/restore", "..disk", "/restore/..disk")]
    [InlineData("/restore", "disk..", "/restore/disk..")]
    [InlineData("vm/20261120-220000", "boot", "vm/20261120-220000/boot")]
    [InlineData("", "vm/20261120-220000/backup.json", "vm/20261120-220000/backup.json")]
    public void A_name_that_stays_inside_is_joined(string folder, string name, string joined) =>
        Assert.Equal(joined, FileSystemPaths.JoinInside(folder, name, "The set X"));

    [Theory]
    [InlineData("/restore", "../x", "'..' part")]
    [InlineData("/restore", "..", "'..' part")]
    [InlineData("/restore", ".", "'..' part")]
    [InlineData("/restore", "a/../../x", "'..' part")]
    [InlineData("/restore", "a/./b", "'..' part")]
    [InlineData("/restore", "/etc/cron.d/x", "absolute path")]
    [InlineData("/restore", "", "empty")]
    [InlineData("/restore", "da\0ta", "NUL")]
    [InlineData("vm/20261120-220000", "../../outside", "'..' part")]
    [InlineData("", "/etc/hostname", "absolute path")]
    public void A_name_that_would_lead_outside_is_refused_naming_who_gave_it_and_the_name(string folder, string name, string why)
    {
        var ex = Assert.Throws<BackupException>(() => FileSystemPaths.JoinInside(folder, name, "The set /backup/vm/20261120-220000"));

        Assert.Equal(ErrorIds.BackupSetUnreadable, ex.ErrorId);
        Assert.StartsWith("The set /backup/vm/20261120-220000 names ", ex.Message, StringComparison.Ordinal);
        Assert.Contains(FileSystemPaths.Quote(name), ex.Message, StringComparison.Ordinal);
        Assert.Contains(why, ex.Message, StringComparison.Ordinal);
        Assert.DoesNotContain('\0', ex.Message);
        Assert.NotNull(ex.RecommendedAction);
    }

    [Theory]
    [InlineData("vm/run/disco secundario, 2")]
    [InlineData("vm/run/..data")]
    [InlineData("vm/run/data..")]
    public async Task Names_with_dots_or_blanks_that_stay_inside_are_fine(string path)
    {
        var root = _temp.Folder("store");
        var store = new LocalBackupStore(root);

        await store.CreateFolderAsync("vm/run", CancellationToken.None);
        await store.WriteSmallFileAsync(path, "x"u8.ToArray(), CancellationToken.None);

        Assert.Equal("x", File.ReadAllText(Path.Combine(root, path)));
        Assert.Equal(Path.Combine(root, path), store.Describe(path));
    }
}
