using System.Security.Cryptography;
using OdaKvmBackup.Core.Tests.Support;
using static OdaKvmBackup.Core.Tests.Support.CloneChecks;

namespace OdaKvmBackup.Core.Tests;

/// <summary>
/// A local store's clone of a set's copy into the next set, and its writer into that clone (issue 15), on real file
/// systems: an XFS with reflink of the tests' own, the ext4 of the temp folder and the tmpfs of /dev/shm.
/// </summary>
public sealed class LocalStoreCloneTests : IClassFixture<XfsFixture>, IDisposable
{
    private const UnixFileMode File0600 = UnixFileMode.UserRead | UnixFileMode.UserWrite;
    private readonly XfsFileSystem _xfs;
    private readonly TempFolder _ext4 = new("localclone-tests");
    private readonly string _tmpfs = Directory.CreateDirectory($"/dev/shm/localclone-tests-{Guid.NewGuid():N}").FullName;

    public LocalStoreCloneTests(XfsFixture fixture) => _xfs = fixture.FileSystem;

    public void Dispose()
    {
        _ext4.Dispose();
        Directory.Delete(_tmpfs, recursive: true);
    }

    public static TheoryData<string> FileSystems() => new() { "xfs", "ext2/ext3", "tmpfs" };

    /// <summary>The whole way a set's copy is made from the previous one: clone, open the clone for writing, write
    /// changed blocks, complete. The base's bytes and times never change; the clone holds the base with the changes.</summary>
    [Theory]
    [MemberData(nameof(FileSystems))]
    public async Task A_clone_written_into_holds_the_base_with_the_changes_and_the_base_is_unchanged(string fileSystem)
    {
        var root = Root(fileSystem);
        Assert.Equal(fileSystem, FileSystemType(root));
        Directory.CreateDirectory(Path.Combine(root, "vm", "run1"));
        Directory.CreateDirectory(Path.Combine(root, "vm", "run2"));
        var baseFile = Base(Path.Combine(root, "vm", "run1"));
        var baseHash = Sha256(baseFile);
        var baseTimes = Times(baseFile);
        IBackupStore store = new LocalBackupStore(root);

        var result = await store.CloneFileAsync("vm/run1/disk", "vm/run2/disk.partial", CancellationToken.None);

        Assert.Equal(fileSystem == "xfs" ? FileClone.Reflink : FileClone.LocalCopy, result.StoredAs);
        Assert.Equal(64L * MiB, result.SizeBytes);
        Assert.Equal(fileSystem == "xfs" ? 0 : 41L * MiB, result.CopiedBytes);
        var clone = Path.Combine(root, "vm", "run2", "disk.partial");
        Assert.Equal(baseHash, Sha256(clone));
        Assert.Equal(File0600, File.GetUnixFileMode(clone));

        var expected = File.ReadAllBytes(baseFile);
        var changed = new byte[64 << 10];
        RandomNumberGenerator.Fill(changed);
        await using (var writer = await store.OpenForWriteAsync("vm/run2/disk.partial", CancellationToken.None))
        {
            await writer.WriteAsync(5L * MiB, changed, CancellationToken.None);      // over data (shared blocks on xfs)
            await writer.WriteAsync(44L * MiB, changed, CancellationToken.None);     // into a hole of the base
            await writer.CompleteAsync(64L * MiB, CancellationToken.None);
        }
        changed.CopyTo(expected, 5 * MiB);
        changed.CopyTo(expected, 44 * MiB);

        Assert.Equal(Convert.ToHexString(SHA256.HashData(expected)), Sha256(clone));
        Assert.Equal(File0600, File.GetUnixFileMode(clone));
        Assert.Equal(baseHash, Sha256(baseFile));
        Assert.Equal(baseTimes, Times(baseFile));
    }

    [Fact]
    public async Task On_xfs_the_store_s_clone_costs_no_space()
    {
        var root = _xfs.Folder(nameof(On_xfs_the_store_s_clone_costs_no_space));
        var baseFile = Base(Directory.CreateDirectory(Path.Combine(root, "run1")).FullName);
        Directory.CreateDirectory(Path.Combine(root, "run2"));
        IBackupStore store = new LocalBackupStore(root);
        var usedBefore = _xfs.UsedBytes();

        await store.CloneFileAsync("run1/disk", "run2/disk.partial", CancellationToken.None);

        var grown = _xfs.UsedBytes() - usedBefore;
        Assert.True(grown < MiB, $"the file system's used space grew by {grown} bytes for a clone of 41 MiB of data");
        var (extents, shared) = Extents(Path.Combine(root, "run2", "disk.partial"));
        Assert.True(extents > 0 && shared == extents, $"{shared} of the clone's {extents} extents are shared with the base");
        Assert.True(File.Exists(baseFile));
    }

    /// <summary>Opening never truncates, whatever is written afterwards: bytes not written keep what the file held,
    /// a writer disposed without completing leaves them too; the size is the one given to CompleteAsync.</summary>
    [Theory]
    [InlineData(64L * MiB, "same size")]
    [InlineData(80L * MiB, "grown")]
    [InlineData(48L * MiB + 4096, "shrunk")]
    public async Task Writing_into_an_existing_file_keeps_what_is_not_written_and_sets_the_size_given(long size, string what)
    {
        var root = _ext4.Folder("keep-" + what.Replace(' ', '-'));
        var file = Base(root);
        var before = File.ReadAllBytes(file);
        IBackupStore store = new LocalBackupStore(root);

        await using (var _ = await store.OpenForWriteAsync("disk", CancellationToken.None))
        {
            // Opened and closed without a write: nothing may have changed.
        }
        Assert.Equal(Convert.ToHexString(SHA256.HashData(before)), Sha256(file));

        await using (var writer = await store.OpenForWriteAsync("disk", CancellationToken.None))
        {
            await writer.WriteAsync(MiB, new byte[4096], CancellationToken.None);
            await writer.CompleteAsync(size, CancellationToken.None);
        }

        var after = File.ReadAllBytes(file);
        Assert.Equal(size, after.LongLength);
        var expected = new byte[size];
        before.AsSpan(0, (int)Math.Min(size, before.Length)).CopyTo(expected);
        Array.Clear(expected, MiB, 4096);
        Assert.True(expected.AsSpan().SequenceEqual(after), $"the file's bytes differ from the base with one block of zeros written ({what})");
        Assert.Equal(File0600, File.GetUnixFileMode(file));
    }

    [Fact]
    public async Task Writing_into_a_file_that_is_not_there_fails_and_creates_nothing()
    {
        var root = _ext4.Folder("missing");
        IBackupStore store = new LocalBackupStore(root);

        var error = await Assert.ThrowsAsync<BackupException>(() => store.OpenForWriteAsync("disk.partial", CancellationToken.None));

        Assert.Equal(ErrorIds.PathNotFound, error.ErrorId);
        Assert.Contains(Path.Combine(root, "disk.partial"), error.Message, StringComparison.Ordinal);
        Assert.Empty(Directory.GetFileSystemEntries(root));
    }

    /// <summary>A link where the clone lies, or a FIFO, is never written through or waited on; a set's folder that
    /// is a link (to a host folder) is not written into, nor is a copy read through it cloned.</summary>
    [Theory]
    [InlineData("a link to a host file")]
    [InlineData("a FIFO")]
    [InlineData("a linked set folder")]
    [InlineData("a folder")]
    public async Task Writing_into_what_is_not_a_regular_file_of_the_store_is_refused_and_touches_nothing(string what)
    {
        var root = _ext4.Folder("refused-" + what.Replace(' ', '-'));
        var host = _ext4.Folder("host-" + what.Replace(' ', '-'));
        var hostFile = Path.Combine(host, "disk.partial");
        File.WriteAllText(hostFile, "host disk");
        var path = "run/disk.partial";
        switch (what)
        {
            case "a link to a host file":
                Directory.CreateDirectory(Path.Combine(root, "run"));
                File.CreateSymbolicLink(Path.Combine(root, path), hostFile);
                break;
            case "a FIFO":
                Directory.CreateDirectory(Path.Combine(root, "run"));
                Tool("mkfifo", Path.Combine(root, path));
                break;
            case "a linked set folder":
                Directory.CreateSymbolicLink(Path.Combine(root, "run"), host);
                break;
            case "a folder":
                Directory.CreateDirectory(Path.Combine(root, path));
                break;
        }
        IBackupStore store = new LocalBackupStore(root);

        var open = Task.Run(() => store.OpenForWriteAsync(path, CancellationToken.None));
        var finished = await Task.WhenAny(open, Task.Delay(TimeSpan.FromSeconds(10)));

        Assert.True(finished == open, "the open hangs");
        var error = await Assert.ThrowsAsync<BackupException>(() => open);
        Assert.Equal(ErrorIds.BackupCopyUnsafe, error.ErrorId);
        Assert.Contains("nothing was written to it", error.Message, StringComparison.Ordinal);
        Assert.Equal("host disk", File.ReadAllText(hostFile));
    }

    [Fact]
    public async Task A_copy_in_a_linked_set_folder_is_not_cloned_and_nothing_is_made()
    {
        var root = _ext4.Folder("linked-base");
        var host = _ext4.Folder("host-images");
        File.WriteAllText(Path.Combine(host, "disk"), "host disk");
        Directory.CreateSymbolicLink(Path.Combine(root, "run1"), host);
        Directory.CreateDirectory(Path.Combine(root, "run2"));
        IBackupStore store = new LocalBackupStore(root);

        var error = await Assert.ThrowsAsync<BackupException>(() => store.CloneFileAsync("run1/disk", "run2/disk.partial", CancellationToken.None));

        Assert.Equal(ErrorIds.BackupCopyUnsafe, error.ErrorId);
        Assert.Contains("it was not cloned", error.Message, StringComparison.Ordinal);
        Assert.Empty(Directory.GetFileSystemEntries(Path.Combine(root, "run2")));
    }

    [Fact]
    public async Task A_clone_is_not_made_over_what_is_already_there()
    {
        var root = _ext4.Folder("exists");
        Base(root);
        File.WriteAllText(Path.Combine(root, "disk.partial"), "kept");
        IBackupStore store = new LocalBackupStore(root);

        var error = await Assert.ThrowsAsync<BackupException>(() => store.CloneFileAsync("disk", "disk.partial", CancellationToken.None));

        Assert.Contains("already exists", error.Message, StringComparison.Ordinal);
        Assert.Equal("kept", File.ReadAllText(Path.Combine(root, "disk.partial")));
    }

    private string Root(string fileSystem) => fileSystem switch
    {
        "xfs" => _xfs.Folder("store-" + Guid.NewGuid().ToString("N")),
        "tmpfs" => Directory.CreateDirectory(Path.Combine(_tmpfs, "store")).FullName,
        _ => _ext4.Folder("store"),
    };
}
