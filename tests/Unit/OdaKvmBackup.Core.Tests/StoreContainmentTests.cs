using OdaKvmBackup.Core.Storage;
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
