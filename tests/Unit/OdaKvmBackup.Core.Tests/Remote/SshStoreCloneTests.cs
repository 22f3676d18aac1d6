using System.Security.Cryptography;
using OdaKvmBackup.Core.Tests.Support;
using static OdaKvmBackup.Core.Tests.Support.CloneChecks;

namespace OdaKvmBackup.Core.Tests.Remote;

/// <summary>
/// An SSH store's clone of a set's copy into the next set, made on the server, and its writer into that clone
/// (issue 15), against a real sshd on loopback whose folders are an XFS with reflink of the tests' own and the ext4
/// of the temp folder (the server is this machine, so the tests look at its files directly).
/// </summary>
[Collection(SshServerCollection.Name)]
public sealed class SshStoreCloneTests : IClassFixture<XfsFixture>
{
    private const UnixFileMode File0600 = UnixFileMode.UserRead | UnixFileMode.UserWrite;
    private readonly TestSshServer _server;
    private readonly XfsFileSystem _xfs;

    public SshStoreCloneTests(SshServerFixture fixture, XfsFixture xfs)
    {
        _server = fixture.Server;
        _xfs = xfs.FileSystem;
    }

    /// <summary>The whole way a set's copy is made from the previous one on a server: clone there, open the clone
    /// for writing over SFTP, write changed blocks, complete. The base's bytes and times never change.</summary>
    [Theory]
    [InlineData("xfs")]
    [InlineData("ext2/ext3")]
    public async Task A_clone_made_on_the_server_and_written_into_holds_the_base_with_the_changes_and_the_base_is_unchanged(string fileSystem)
    {
        var root = fileSystem == "xfs" ? _xfs.Folder("ssh-store-" + Guid.NewGuid().ToString("N")) : _server.DataFolder("clone-" + Guid.NewGuid().ToString("N"));
        Assert.Equal(fileSystem, FileSystemType(root));
        var baseFile = Base(Directory.CreateDirectory(Path.Combine(root, "vm", "run1")).FullName);
        Directory.CreateDirectory(Path.Combine(root, "vm", "run2"));
        var baseHash = Sha256(baseFile);
        var baseTimes = Times(baseFile);
        await using IBackupStore store = _server.Store("good", root);
        var usedBefore = fileSystem == "xfs" ? _xfs.UsedBytes() : 0;

        var result = await store.CloneFileAsync("vm/run1/disk", "vm/run2/disk.partial", CancellationToken.None);

        var clone = Path.Combine(root, "vm", "run2", "disk.partial");
        Assert.Equal(fileSystem == "xfs" ? FileClone.Reflink : FileClone.LocalCopy, result.StoredAs);
        Assert.Equal(64L * MiB, result.SizeBytes);
        if (fileSystem == "xfs")
        {
            Assert.Equal(0, result.CopiedBytes);
            var grown = _xfs.UsedBytes() - usedBefore;
            Assert.True(grown < MiB, $"the server's used space grew by {grown} bytes for a clone of 41 MiB of data");
        }
        else
        {
            // What the local copy allocated: the base's 41 MiB of data, its holes left holes.
            Assert.Equal(Files.AllocatedBytes(clone), result.CopiedBytes);
            Assert.InRange(result.CopiedBytes, 41L * MiB, 42L * MiB);
        }
        Assert.Equal(baseHash, Sha256(clone));
        Assert.Equal(File0600, File.GetUnixFileMode(clone));

        var expected = File.ReadAllBytes(baseFile);
        var changed = new byte[64 << 10];
        RandomNumberGenerator.Fill(changed);
        await using (var writer = await store.OpenForWriteAsync("vm/run2/disk.partial", CancellationToken.None))
        {
            await writer.WriteAsync(5L * MiB, changed, CancellationToken.None);
            await writer.WriteAsync(44L * MiB, changed, CancellationToken.None);
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
    public async Task A_base_that_is_not_there_is_BackupCopyMissing_naming_the_fix_and_nothing_is_made()
    {
        var root = _server.DataFolder("clone-missing");
        await using IBackupStore store = _server.Store("good", root);

        var error = await Assert.ThrowsAsync<BackupException>(() => store.CloneFileAsync("run1/disk", "disk.partial", CancellationToken.None));

        Assert.Equal(ErrorIds.BackupCopyMissing, error.ErrorId);
        Assert.Contains("good:" + Path.Combine(root, "run1/disk"), error.Message, StringComparison.Ordinal);
        Assert.Contains("-Full", error.RecommendedAction, StringComparison.Ordinal);
        Assert.Empty(Directory.GetFileSystemEntries(root));
    }

    [Fact]
    public async Task A_clone_is_not_made_over_what_is_already_there_and_the_error_says_what_to_remove()
    {
        var root = _server.DataFolder("clone-exists");
        Base(root);
        File.WriteAllText(Path.Combine(root, "disk.partial"), "kept");
        await using IBackupStore store = _server.Store("good", root);

        var error = await Assert.ThrowsAsync<BackupException>(() => store.CloneFileAsync("disk", "disk.partial", CancellationToken.None));

        Assert.Equal(ErrorIds.StorageFailed, error.ErrorId);
        Assert.Equal(BackupErrorCategory.ResourceExists, error.Category);
        Assert.Contains("already exists", error.Message, StringComparison.Ordinal);
        Assert.Contains("Remove what is there", error.RecommendedAction, StringComparison.Ordinal);
        Assert.Equal("kept", File.ReadAllText(Path.Combine(root, "disk.partial")));
    }

    [Theory]
    [InlineData("../outside")]
    [InlineData("vm/../../outside")]
    [InlineData("/etc/hostname")]
    public async Task A_path_that_leads_outside_the_root_is_refused_before_the_server_is_asked(string path)
    {
        var root = _server.DataFolder("clone-containment-" + Guid.NewGuid().ToString("N"));
        Base(root);
        var outside = Path.Combine(Path.GetDirectoryName(root)!, "outside");
        File.WriteAllText(outside, "host file");
        await using IBackupStore store = _server.Store("good", root);

        var errors = new[]
        {
            await Assert.ThrowsAsync<BackupException>(() => store.CloneFileAsync(path, "disk.partial", CancellationToken.None)),
            await Assert.ThrowsAsync<BackupException>(() => store.CloneFileAsync("disk", path, CancellationToken.None)),
            await Assert.ThrowsAsync<BackupException>(() => store.OpenForWriteAsync(path, CancellationToken.None)),
        };

        Assert.All(errors, ex =>
        {
            Assert.Equal(ErrorIds.BackupSetUnreadable, ex.ErrorId);
            Assert.Contains($"'{path}'", ex.Message, StringComparison.Ordinal);
        });
        Assert.Equal("host file", File.ReadAllText(outside));
        Assert.Equal([Path.Combine(root, "disk")], Directory.GetFileSystemEntries(root));
    }

    [Fact]
    public async Task Opening_a_file_for_writing_never_truncates_it_and_a_missing_one_is_not_created()
    {
        var root = _server.DataFolder("open-keep");
        var file = Base(root);
        var before = Sha256(file);
        await using IBackupStore store = _server.Store("good", root);

        await using (var _ = await store.OpenForWriteAsync("disk", CancellationToken.None))
        {
            // Opened and closed without a write.
        }
        var missing = await Assert.ThrowsAsync<BackupException>(() => store.OpenForWriteAsync("disk.partial", CancellationToken.None));

        Assert.Equal(before, Sha256(file));
        Assert.Equal(64L * MiB, new FileInfo(file).Length);
        Assert.Equal(File0600, File.GetUnixFileMode(file)); // it was 0644: made private
        Assert.Equal(ErrorIds.PathNotFound, missing.ErrorId);
        Assert.False(File.Exists(Path.Combine(root, "disk.partial")));
    }

    /// <summary>A FIFO planted where the clone should be would block the server's SFTP service on the open; a link
    /// would be written through: neither is opened.</summary>
    [Theory]
    [InlineData("a FIFO")]
    [InlineData("a link to a file")]
    public async Task Writing_into_what_is_not_a_regular_file_is_refused_without_hanging(string what)
    {
        var root = _server.DataFolder("open-refused-" + what.Replace(' ', '-'));
        var elsewhere = Path.Combine(root, "elsewhere");
        File.WriteAllText(elsewhere, "kept");
        if (what == "a FIFO")
            Tool("mkfifo", Path.Combine(root, "disk.partial"));
        else
            File.CreateSymbolicLink(Path.Combine(root, "disk.partial"), elsewhere);
        await using IBackupStore store = _server.Store("good", root);

        var open = store.OpenForWriteAsync("disk.partial", CancellationToken.None);
        var finished = await Task.WhenAny(open, Task.Delay(TimeSpan.FromSeconds(20)));

        Assert.True(finished == open, "the open hangs");
        var error = await Assert.ThrowsAsync<BackupException>(() => open);
        Assert.Equal(ErrorIds.BackupCopyUnsafe, error.ErrorId);
        Assert.Contains("nothing was written to it", error.Message, StringComparison.Ordinal);
        Assert.Equal("kept", File.ReadAllText(elsewhere));
    }

    /// <summary>The writer reconnects when its connection is cut and reopens the file IN PLACE: a reopen that
    /// truncated would lose every byte of the clone the writer does not send again (here, every other MiB and
    /// all that was acknowledged before the cut).</summary>
    [Fact]
    public async Task A_connection_cut_while_writing_into_a_clone_is_made_again_and_the_clone_keeps_every_byte_not_written()
    {
        using var server = new TestSshServer();
        var root = server.DataFolder("resume-in-place");
        var size = 48 * MiB;
        var expected = new byte[size];
        RandomNumberGenerator.Fill(expected);
        File.WriteAllBytes(Path.Combine(root, "disk.partial"), expected);
        var changes = new byte[size];
        RandomNumberGenerator.Fill(changes);
        await using IBackupStore store = server.Store("good", root);

        await using (var writer = await store.OpenForWriteAsync("disk.partial", CancellationToken.None))
        {
            var cuts = 0;
            for (var offset = 0; offset < size; offset += 2 * MiB)
            {
                await writer.WriteAsync(offset, changes.AsMemory(offset, MiB), CancellationToken.None);
                changes.AsSpan(offset, MiB).CopyTo(expected.AsSpan(offset));
                // Writes are in flight (the window holds up to 16 MiB): the server has not acknowledged them all.
                if (offset is 12 * MiB or 30 * MiB)
                    cuts += server.KillConnections();
            }
            await writer.CompleteAsync(size, CancellationToken.None);
            // The first cut always finds the connection the open made; the second only when the writer had already
            // connected again by then (its reconnect runs on its own time): at least one cut is the point.
            Assert.True(cuts >= 1, $"{cuts} connections were cut");
        }

        var stored = File.ReadAllBytes(Path.Combine(root, "disk.partial"));
        Assert.Equal(size, stored.Length);
        var firstWrong = stored.AsSpan().CommonPrefixLength(expected);
        Assert.True(firstWrong == size, $"the clone differs from the base with the changes from byte {firstWrong} on");
        var logins = server.Log.Split('\n').Count(line => line.Contains("Accepted publickey", StringComparison.Ordinal));
        Assert.True(logins >= 2, server.Log);
    }
}

/// <summary>
/// How the writer opens a file, and opens it again after a stall, seen in the OPEN requests a
/// <see cref="FakeSftpServer"/> receives: a file opened in place is never opened with TRUNC, CREAT or EXCL, on its
/// first session or any later one; a created file is truncated only by its first open. The stall limit is set the
/// way a user sets it, in the environment, so these tests run alone.
/// </summary>
[Collection(EnvironmentCollection.Name)]
public sealed class SshWriterReopenTests
{
    private const int MiB = 1 << 20;
    private static readonly TimeSpan Outer = TimeSpan.FromSeconds(40);

    [Theory]
    [InlineData(true)]
    [InlineData(false)]
    public async Task A_writer_that_connects_again_reopens_its_file_in_place_however_it_first_opened_it(bool inPlace)
    {
        using var limits = new EnvironmentScope(("ODAKVMBACKUP_SFTP_STALL_SEC", "1"), ("ODAKVMBACKUP_SFTP_TIMEOUT_SEC", "30"));
        // The first session stops acknowledging writes after a few: the writer's stall watchdog ends it, and the
        // writer connects again and sends what was not acknowledged.
        var server = new FakeSftpServer { FileSize = 64L * MiB, Ignores = r => r.Type == SftpPacketType.Write && r.Session == 0 && r.Index > 8 };
        await using IBackupStore store = new SshBackupStore(server.Client(), TestSshServer.QuickReconnect);

        await using (var writer = inPlace
            ? await store.OpenForWriteAsync("disk", CancellationToken.None).WaitAsync(Outer)
            : await store.CreateFileAsync("disk", CancellationToken.None).WaitAsync(Outer))
        {
            var data = new byte[MiB];
            data.AsSpan().Fill(7);
            for (var offset = 0L; offset < 32 * MiB; offset += MiB)
                await writer.WriteAsync(offset, data, CancellationToken.None).AsTask().WaitAsync(Outer);
            await writer.CompleteAsync(32 * MiB, CancellationToken.None).WaitAsync(Outer);
        }

        List<FakeSftpRequest> opens;
        lock (server.Requests)
            opens = server.Requests.Where(r => r.Type == SftpPacketType.Open).ToList();
        Assert.True(opens.Select(o => o.Session).Distinct().Count() >= 2, $"the writer opened the file in sessions {string.Join(", ", opens.Select(o => o.Session))}");
        Assert.Equal(inPlace ? SftpOpenFlags.Write : SftpOpenFlags.Write | SftpOpenFlags.Create | SftpOpenFlags.Truncate, opens[0].OpenFlags);
        Assert.All(opens.Skip(1), open => Assert.Equal(SftpOpenFlags.Write, open.OpenFlags));
    }
}
