using OdaKvmBackup.Core.Tests.Support;

namespace OdaKvmBackup.Core.Tests;

/// <summary>The local folder (or NFS mount) store on real temp folders.</summary>
public sealed class LocalBackupStoreTests : IDisposable
{
    private readonly TempFolder _temp = new("localstore-tests");

    public void Dispose() => _temp.Dispose();

    [Fact]
    public async Task Write_probe_leaves_the_folder_as_it_found_it_and_follows_no_planted_symlink()
    {
        var root = _temp.Folder("backup");
        var victim = _temp.Combine("victim");
        File.WriteAllText(victim, "keep me");
        File.CreateSymbolicLink(Path.Combine(root, ".odakvmbackup-probe-planted"), victim);
        File.CreateSymbolicLink(Path.Combine(root, ".odakvmbackup-probe-dangling"), _temp.Combine("created-through-a-link"));
        var before = Directory.GetFileSystemEntries(root).Order(StringComparer.Ordinal).ToList();

        await new LocalBackupStore(root).CheckWritableAsync(CancellationToken.None);

        Assert.Equal(before, Directory.GetFileSystemEntries(root).Order(StringComparer.Ordinal));
        Assert.Equal("keep me", File.ReadAllText(victim));
        Assert.False(File.Exists(_temp.Combine("created-through-a-link")));
    }

    [Fact]
    public async Task Missing_destination_is_PathNotFound_with_the_command_that_creates_it()
    {
        var missing = _temp.Combine("no-such-folder");

        var ex = await Assert.ThrowsAsync<BackupException>(() => new LocalBackupStore(missing) { ParameterName = "Destination" }.CheckWritableAsync(CancellationToken.None));

        Assert.Equal(ErrorIds.PathNotFound, ex.ErrorId);
        Assert.Contains("-Destination", ex.Message, StringComparison.Ordinal);
        Assert.Contains($"mkdir -p '{missing}'", ex.RecommendedAction, StringComparison.Ordinal);
    }

    [Fact]
    public async Task Destination_that_cannot_be_written_is_PathNotWritable()
    {
        // Root may write anywhere; an immutable folder refuses even root, as a read-only mount does.
        var root = _temp.Folder("readonly");
        PrivateFilesTests.Chattr("+i", root);
        try
        {
            var ex = await Assert.ThrowsAsync<BackupException>(() => new LocalBackupStore(root).CheckWritableAsync(CancellationToken.None));

            Assert.Equal(ErrorIds.PathNotWritable, ex.ErrorId);
            Assert.Equal(BackupErrorCategory.PermissionDenied, ex.Category);
            Assert.Contains(root, ex.Message, StringComparison.Ordinal);
        }
        finally
        {
            PrivateFilesTests.Chattr("-i", root);
        }
    }

    [Fact]
    public async Task File_created_where_a_symlink_was_planted_replaces_the_link_and_never_writes_through_it()
    {
        var root = _temp.Folder("backup");
        Directory.CreateDirectory(Path.Combine(root, "vm", "run"));
        var victim = _temp.Combine("etc-shadow");
        File.WriteAllText(victim, "keep me");
        var partial = Path.Combine(root, "vm", "run", "disk.partial");
        File.CreateSymbolicLink(partial, victim);
        var store = new LocalBackupStore(root);

        using (Umask.Set(0))
        {
            await using var writer = await store.CreateFileAsync("vm/run/disk.partial", CancellationToken.None);
            await writer.WriteAsync(0, new byte[] { 1, 2, 3 }, CancellationToken.None);
            await writer.CompleteAsync(4096, CancellationToken.None);
        }

        Assert.Equal("keep me", File.ReadAllText(victim));
        var info = new FileInfo(partial);
        Assert.Null(info.LinkTarget);
        Assert.Equal(4096, info.Length);
        Assert.Equal(PrivateFiles.FileMode, File.GetUnixFileMode(partial));
    }

    [Fact]
    public async Task Small_file_is_replaced_whole_and_private()
    {
        var store = new LocalBackupStore(_temp.Folder("backup"));
        await store.CreateFolderAsync("vm/run", CancellationToken.None);

        using (Umask.Set(0))
        {
            await store.WriteSmallFileAsync("vm/run/backup.json", "{\"v\":1}"u8.ToArray(), CancellationToken.None);
            await store.WriteSmallFileAsync("vm/run/backup.json", "{\"v\":2}"u8.ToArray(), CancellationToken.None);
        }

        Assert.Equal("{\"v\":2}"u8.ToArray(), await store.ReadSmallFileAsync("vm/run/backup.json", CancellationToken.None));
        Assert.Equal(PrivateFiles.FileMode, File.GetUnixFileMode(store.Describe("vm/run/backup.json")));
        Assert.Equal(PrivateFiles.FolderMode, File.GetUnixFileMode(store.Describe("vm")));
        Assert.Equal(["backup.json"], (await store.ListAsync("vm/run", CancellationToken.None)).Select(e => e.Name));
    }

    [Fact]
    public async Task Paths_are_relative_to_the_root_however_the_root_was_typed()
    {
        var root = _temp.Folder("backup");
        var store = new LocalBackupStore(root + "/");

        Assert.Equal(root, store.Location);
        Assert.Equal(Path.Combine(root, "vm", "run", "disk"), store.Describe("vm/run/disk"));
        Assert.False(store.IsRemote);
        Assert.True(await store.GetFreeBytesAsync(CancellationToken.None) > 0);
        Assert.Null(await store.GetEntryAsync("vm", CancellationToken.None));
        Assert.Empty(await store.ListAsync("vm", CancellationToken.None));
    }

    [Fact]
    public async Task Rename_replaces_the_target_and_delete_of_nothing_is_fine()
    {
        var store = new LocalBackupStore(_temp.Folder("backup"));
        await store.WriteSmallFileAsync("a", "new"u8.ToArray(), CancellationToken.None);
        await store.WriteSmallFileAsync("b", "old"u8.ToArray(), CancellationToken.None);

        await store.RenameAsync("a", "b", CancellationToken.None);
        await store.DeleteAsync("nothing-here", recursive: false, CancellationToken.None);

        Assert.Equal("new"u8.ToArray(), await store.ReadSmallFileAsync("b", CancellationToken.None));
        Assert.Null(await store.GetEntryAsync("a", CancellationToken.None));
    }

    [Fact]
    public async Task Reading_a_missing_file_is_PathNotFound()
    {
        var store = new LocalBackupStore(_temp.Folder("backup"));

        var ex = await Assert.ThrowsAsync<BackupException>(() => store.ReadSmallFileAsync("vm/run/backup.json", CancellationToken.None));

        Assert.Equal(ErrorIds.PathNotFound, ex.ErrorId);
    }

    [Fact]
    public void Storage_failures_read_as_full_not_writable_or_failed()
    {
        var full = StoreErrors.FromIOException(new IOException("No space left on device : '/backup/x'", 28), "/backup/x");
        var quota = StoreErrors.FromIOException(new IOException("Disk quota exceeded", 122), "/backup/x");
        var denied = StoreErrors.FromIOException(new UnauthorizedAccessException("Access to the path is denied."), "/backup/x");
        var other = StoreErrors.FromIOException(new IOException("Input/output error", 5), "/backup/x");

        Assert.Equal(ErrorIds.DestinationFull, full.ErrorId);
        Assert.Equal(ErrorIds.DestinationFull, quota.ErrorId);
        Assert.Equal(ErrorIds.PathNotWritable, denied.ErrorId);
        Assert.Equal(ErrorIds.StorageFailed, other.ErrorId);
        Assert.All([full, quota, denied, other], e => Assert.Contains("/backup/x", e.Message, StringComparison.Ordinal));
    }
}
