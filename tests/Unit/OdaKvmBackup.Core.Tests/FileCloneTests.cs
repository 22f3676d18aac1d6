using OdaKvmBackup.Core.Tests.Support;
using static OdaKvmBackup.Core.Tests.Support.CloneChecks;

namespace OdaKvmBackup.Core.Tests;

/// <summary>FileClone on real file systems: an XFS with reflink of the tests' own (loop device), the ext4 of the temp
/// folder and the tmpfs of /dev/shm, which cannot clone.</summary>
public sealed class FileCloneTests : IClassFixture<XfsFixture>, IDisposable
{
    private const UnixFileMode File0600 = UnixFileMode.UserRead | UnixFileMode.UserWrite;
    private readonly XfsFileSystem _xfs;
    private readonly TempFolder _ext4 = new("fileclone-tests");
    private readonly string _tmpfs = Directory.CreateDirectory($"/dev/shm/fileclone-tests-{Guid.NewGuid():N}").FullName;

    public FileCloneTests(XfsFixture fixture) => _xfs = fixture.FileSystem;

    public void Dispose()
    {
        _ext4.Dispose();
        Directory.Delete(_tmpfs, recursive: true);
    }

    [Fact]
    public void On_xfs_the_clone_shares_the_base_s_blocks_and_writing_into_it_leaves_the_base_as_it_was()
    {
        var folder = _xfs.Folder(nameof(On_xfs_the_clone_shares_the_base_s_blocks_and_writing_into_it_leaves_the_base_as_it_was));
        Assert.Equal("xfs", FileSystemType(folder));
        var baseFile = Base(folder);
        var baseHash = Sha256(baseFile);
        var baseTimes = Times(baseFile);
        var usedBefore = _xfs.UsedBytes();
        var clone = Path.Combine(folder, "disk.partial");

        CloneResult result;
        using (Umask.Set(0))
            result = FileClone.Clone(baseFile, clone, CancellationToken.None);

        Assert.Equal(new CloneResult(FileClone.Reflink, 64L * MiB, 0), result);
        Assert.Equal(baseHash, Sha256(clone));
        Assert.Equal(File0600, File.GetUnixFileMode(clone));
        var (extents, shared) = Extents(clone);
        Assert.True(extents > 0 && shared == extents, $"{shared} of the clone's {extents} extents are shared with the base");
        var grown = _xfs.UsedBytes() - usedBefore;
        Assert.True(grown < MiB, $"the file system's used space grew by {grown} bytes for a clone of 41 MiB of data");

        WriteInto(clone, 0, MiB);            // over shared blocks
        WriteInto(clone, 44L * MiB, 4096);   // into a hole of the base

        Assert.Equal(baseHash, Sha256(baseFile));
        Assert.Equal(baseTimes, Times(baseFile));
        Assert.NotEqual(baseHash, Sha256(clone));
    }

    public static TheoryData<string> FileSystemsThatCannotClone() => new() { "ext2/ext3", "tmpfs" };

    [Theory]
    [MemberData(nameof(FileSystemsThatCannotClone))]
    public void Where_the_file_system_cannot_clone_a_sparse_local_copy_stands_in(string fileSystem)
    {
        var folder = fileSystem == "tmpfs" ? _tmpfs : _ext4.FullPath;
        Assert.Equal(fileSystem, FileSystemType(folder));
        var baseFile = Base(folder);
        var baseHash = Sha256(baseFile);
        var baseTimes = Times(baseFile);
        var clone = Path.Combine(folder, "disk.partial");

        CloneResult result;
        using (Umask.Set(0))
            result = FileClone.Clone(baseFile, clone, CancellationToken.None);

        Assert.Equal(FileClone.LocalCopy, result.StoredAs);
        Assert.Equal(64L * MiB, result.SizeBytes);
        Assert.Equal(41L * MiB, result.CopiedBytes); // the data extents, not the holes
        Assert.Equal(baseHash, Sha256(clone));
        Assert.Equal(64L * MiB, new FileInfo(clone).Length);
        Assert.True(Files.AllocatedBytes(clone) <= Files.AllocatedBytes(baseFile),
            $"the copy allocates {Files.AllocatedBytes(clone)} bytes, the base {Files.AllocatedBytes(baseFile)}: its holes were filled");
        Assert.Equal(File0600, File.GetUnixFileMode(clone));
        Assert.Equal(baseHash, Sha256(baseFile));
        Assert.Equal(baseTimes, Times(baseFile));
    }

    /// <summary>Oracle Linux 7's glibc has no copy_file_range: the copy reads and writes, leaving the base's holes
    /// and its runs of zeros as holes.</summary>
    [Fact]
    public void Without_copy_file_range_the_local_copy_reads_and_writes_and_keeps_it_sparse()
    {
        var folder = _ext4.Folder("without-copy-file-range");
        var baseFile = Path.Combine(folder, "disco_secundario");
        Files.Image(baseFile, 64L * MiB, [(0, 3 * MiB), (40L * MiB + 5, 4096), (64L * MiB - 10, 10)], allocate: true);
        Assert.True(Files.AllocatedBytes(baseFile) >= 64L * MiB, "precondition: the base is fully allocated");
        var baseHash = Sha256(baseFile);
        var clone = Path.Combine(folder, "disco_secundario.partial");

        var result = FileClone.Clone(baseFile, clone, kernelCopy: false, CancellationToken.None);

        Assert.Equal(new CloneResult(FileClone.LocalCopy, 64L * MiB, 64L * MiB), result);
        Assert.Equal(baseHash, Sha256(clone));
        Assert.True(Files.AllocatedBytes(clone) <= 4 * MiB, $"the copy allocates {Files.AllocatedBytes(clone)} bytes for 3 MiB of data");
        Assert.Equal(UnixFileMode.UserRead | UnixFileMode.UserWrite, File.GetUnixFileMode(clone));
    }

    [Theory]
    [InlineData("a file")]
    [InlineData("a link to a file")]
    [InlineData("a dangling link")]
    public void Nothing_is_cloned_over_what_is_already_at_the_new_path(string what)
    {
        var folder = _xfs.Folder("exists-" + what.Replace(' ', '-'));
        var baseFile = Base(folder);
        var clone = Path.Combine(folder, "disk.partial");
        var elsewhere = Path.Combine(folder, "elsewhere");
        switch (what)
        {
            case "a file":
                File.WriteAllText(clone, "kept");
                break;
            case "a link to a file":
                File.WriteAllText(elsewhere, "kept");
                File.CreateSymbolicLink(clone, elsewhere);
                break;
            default:
                File.CreateSymbolicLink(clone, elsewhere);
                break;
        }

        var error = Assert.Throws<BackupException>(() => FileClone.Clone(baseFile, clone, CancellationToken.None));

        Assert.Equal(ErrorIds.StorageFailed, error.ErrorId);
        Assert.Equal(BackupErrorCategory.ResourceExists, error.Category);
        Assert.Contains("already exists", error.Message, StringComparison.Ordinal);
        if (what == "a dangling link")
            Assert.False(File.Exists(elsewhere), "the clone was written through the link");
        else
            Assert.Equal("kept", File.ReadAllText(what == "a file" ? clone : elsewhere));
    }

    [Fact]
    public void A_base_that_is_missing_a_link_a_folder_or_a_fifo_is_refused_and_leaves_no_new_file()
    {
        var folder = _xfs.Folder("bad-bases");
        var real = Base(folder, "real");
        File.CreateSymbolicLink(Path.Combine(folder, "link"), real);
        Directory.CreateDirectory(Path.Combine(folder, "folder"));
        CloneChecks.Tool("mkfifo", Path.Combine(folder, "fifo"));

        var expected = new Dictionary<string, string>
        {
            ["missing"] = ErrorIds.BackupCopyMissing,
            ["link"] = ErrorIds.BackupSetUnreadable,
            ["folder"] = ErrorIds.BackupSetUnreadable,
            ["fifo"] = ErrorIds.BackupSetUnreadable,
        };
        foreach (var (name, errorId) in expected)
        {
            var clone = Path.Combine(folder, name + ".partial");
            var error = Assert.Throws<BackupException>(() => FileClone.Clone(Path.Combine(folder, name), clone, CancellationToken.None));
            Assert.True(errorId == error.ErrorId, $"{name}: {error.ErrorId}: {error.Message}");
            Assert.False(File.Exists(clone) || Directory.Exists(clone), $"{name}: a new file was left behind");
        }
    }

    [Fact]
    public async Task A_clone_runs_on_a_thread_of_its_own_and_a_cancelled_one_leaves_no_new_file()
    {
        var folder = _ext4.Folder("cancel");
        var baseFile = Base(folder);

        var result = await FileClone.CloneAsync(baseFile, Path.Combine(folder, "copy"), CancellationToken.None);
        Assert.Equal(FileClone.LocalCopy, result.StoredAs);
        await Assert.ThrowsAnyAsync<OperationCanceledException>(() => FileClone.CloneAsync(baseFile, Path.Combine(folder, "cancelled"), new CancellationToken(true)));

        Assert.False(File.Exists(Path.Combine(folder, "cancelled")));
    }
}

/// <summary>One XFS for the tests of a class.</summary>
public sealed class XfsFixture : IDisposable
{
    internal XfsFileSystem FileSystem { get; } = new();

    public void Dispose() => FileSystem.Dispose();
}
