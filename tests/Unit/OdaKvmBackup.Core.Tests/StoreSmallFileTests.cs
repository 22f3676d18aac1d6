using System.Diagnostics;
using System.Net.Sockets;
using OdaKvmBackup.Core.Tests.Support;

namespace OdaKvmBackup.Core.Tests;

/// <summary>
/// The small files of a set (backup.json, domain.xml) come from a store that may be less protected than the host:
/// they are read only when they are regular files (no FIFO, device, socket, folder or symbolic link) no larger than
/// their cap, and a refusal is BackupSetUnreadable, which the catalog reports for that set while it lists the others.
/// </summary>
public sealed class LocalStoreSmallFileTests : IDisposable
{
    private static readonly TimeSpan Soon = TimeSpan.FromSeconds(10);
    private readonly TempFolder _temp = new("small-files");
    private readonly string _root;
    private readonly LocalBackupStore _store;

    public LocalStoreSmallFileTests()
    {
        _root = _temp.Folder("backup");
        Directory.CreateDirectory(Path.Combine(_root, "vm", "20261201-220000"));
        _store = new LocalBackupStore(_root);
    }

    public void Dispose()
    {
        SmallFiles.ReleaseFifos(_root);
        _temp.Dispose();
    }

    private string InSet(string name) => Path.Combine(_root, "vm", "20261201-220000", name);

    private const string Manifest = "vm/20261201-220000/backup.json";

    [Fact]
    public async Task A_FIFO_named_backup_json_is_refused_at_once_never_waited_on()
    {
        SmallFiles.MakeFifo(InSet("backup.json"));
        var clock = Stopwatch.StartNew();

        var error = await SmallFiles.RefusedAsync(() => _store.ReadSmallFileAsync(Manifest, CancellationToken.None));

        Assert.True(clock.Elapsed < TimeSpan.FromSeconds(2), $"took {clock.Elapsed}");
        Assert.Contains("FIFO", error.Message, StringComparison.Ordinal);
        Assert.Contains(InSet("backup.json"), error.Message, StringComparison.Ordinal);
    }

    [Fact]
    public async Task A_symbolic_link_to_a_file_outside_the_store_is_refused_not_followed()
    {
        var outside = _temp.Combine("elsewhere.json");
        File.WriteAllText(outside, "{\"looks\":\"like a manifest\"}");
        File.CreateSymbolicLink(InSet("backup.json"), outside);

        var error = await SmallFiles.RefusedAsync(() => _store.ReadSmallFileAsync(Manifest, CancellationToken.None));

        Assert.Contains("symbolic link", error.Message, StringComparison.Ordinal);
    }

    [Fact]
    public async Task A_socket_a_device_and_a_folder_are_refused_by_what_they_are()
    {
        using (var socket = new Socket(AddressFamily.Unix, SocketType.Stream, ProtocolType.Unspecified))
        {
            socket.Bind(new UnixDomainSocketEndPoint(InSet("backup.json")));
            Assert.Contains("socket", (await SmallFiles.RefusedAsync(() => _store.ReadSmallFileAsync(Manifest, CancellationToken.None))).Message, StringComparison.Ordinal);
        }
        File.Delete(InSet("backup.json"));
        Assert.Equal(0, TestSshServer.Run("mknod", [InSet("backup.json"), "c", "1", "5"]).Code); // what /dev/zero is: endless
        Assert.Contains("device", (await SmallFiles.RefusedAsync(() => _store.ReadSmallFileAsync(Manifest, CancellationToken.None))).Message, StringComparison.Ordinal);
        File.Delete(InSet("backup.json"));
        Directory.CreateDirectory(InSet("domain.xml"));
        Assert.Contains("folder", (await SmallFiles.RefusedAsync(() => _store.ReadSmallFileAsync("vm/20261201-220000/domain.xml", CancellationToken.None))).Message, StringComparison.Ordinal);
    }

    [Theory]
    [InlineData("backup.json", 64L << 20)]
    [InlineData("domain.xml", 4L << 20)]
    public async Task A_small_file_past_its_cap_is_refused_and_one_at_its_cap_is_read(string name, long cap)
    {
        using (var file = File.Create(InSet(name)))
            file.SetLength(cap + 1);

        var error = await SmallFiles.RefusedAsync(() => _store.ReadSmallFileAsync("vm/20261201-220000/" + name, CancellationToken.None));

        Assert.Contains($"{cap >> 20} MiB", error.Message, StringComparison.Ordinal);
        using (var file = File.OpenWrite(InSet(name)))
            file.SetLength(cap);
        Assert.Equal(cap, (await Task.Run(() => _store.ReadSmallFileAsync("vm/20261201-220000/" + name, CancellationToken.None)).WaitAsync(Soon)).Length);
    }

    [Fact]
    public async Task The_catalog_lists_the_good_sets_and_reports_the_one_with_a_FIFO_as_unreadable_with_the_reason()
    {
        await SmallFiles.WriteSetAsync(_store, "vm", "20261130-220000");
        await SmallFiles.WriteSetAsync(_store, "vm", "20261202-220000");
        SmallFiles.MakeFifo(InSet("backup.json"));
        var clock = Stopwatch.StartNew();

        var listing = await Task.Run(() => BackupCatalog.ListAsync(_store, null, CancellationToken.None)).WaitAsync(Soon);

        Assert.True(clock.Elapsed < TimeSpan.FromSeconds(2), $"took {clock.Elapsed}");
        Assert.Equal(["20261130-220000", "20261202-220000"], listing.Sets.Select(s => s.RunId));
        var unreadable = Assert.Single(listing.Unreadable);
        Assert.Equal(Path.Combine(_root, "vm", "20261201-220000"), unreadable.Location);
        Assert.Equal(ErrorIds.BackupSetUnreadable, unreadable.Error.ErrorId);
        Assert.Contains("FIFO", unreadable.Error.Message, StringComparison.Ordinal);
    }
}

/// <summary>The same rules for a set on an SSH server (the server's folders are local, so the tests make the
/// FIFOs, links and large files there directly).</summary>
[Collection(SshServerCollection.Name)]
public sealed class SshStoreSmallFileTests
{
    private readonly TestSshServer _server;

    public SshStoreSmallFileTests(SshServerFixture fixture) => _server = fixture.Server;

    private string Root(string test)
    {
        var root = _server.DataFolder(test);
        Directory.CreateDirectory(Path.Combine(root, "vm", "20261201-220000"));
        return root;
    }

    private const string Manifest = "vm/20261201-220000/backup.json";

    [Fact]
    public async Task A_FIFO_named_backup_json_on_the_server_is_refused_at_once_never_opened()
    {
        var root = Root(nameof(A_FIFO_named_backup_json_on_the_server_is_refused_at_once_never_opened));
        SmallFiles.MakeFifo(Path.Combine(root, Manifest));
        try
        {
            await using var store = _server.Store("good", root);
            var clock = Stopwatch.StartNew();

            var error = await SmallFiles.RefusedAsync(() => store.ReadSmallFileAsync(Manifest, CancellationToken.None));

            Assert.True(clock.Elapsed < TimeSpan.FromSeconds(5), $"took {clock.Elapsed}");
            Assert.Contains("FIFO", error.Message, StringComparison.Ordinal);
            Assert.Contains($"good:{root}/{Manifest}", error.Message, StringComparison.Ordinal);
            // The session is still good: nothing on the server waits on the FIFO.
            Assert.NotNull(await store.GetEntryAsync("vm", CancellationToken.None));
        }
        finally
        {
            SmallFiles.ReleaseFifos(root);
        }
    }

    [Fact]
    public async Task A_symbolic_link_and_a_file_past_the_cap_on_the_server_are_refused()
    {
        var root = Root(nameof(A_symbolic_link_and_a_file_past_the_cap_on_the_server_are_refused));
        var outside = Path.Combine(_server.DataFolder("outside-the-store"), "passwd");
        File.WriteAllText(outside, "root:x:0:0::/root:/bin/sh\n");
        File.CreateSymbolicLink(Path.Combine(root, Manifest), outside);
        using (var file = File.Create(Path.Combine(root, "vm/20261201-220000/domain.xml")))
            file.SetLength((4L << 20) + 1);
        await using var store = _server.Store("good", root);

        Assert.Contains("symbolic link", (await SmallFiles.RefusedAsync(() => store.ReadSmallFileAsync(Manifest, CancellationToken.None))).Message, StringComparison.Ordinal);
        Assert.Contains("4 MiB", (await SmallFiles.RefusedAsync(() => store.ReadSmallFileAsync("vm/20261201-220000/domain.xml", CancellationToken.None))).Message, StringComparison.Ordinal);
    }

    [Fact]
    public async Task The_catalog_of_an_SSH_store_lists_the_good_sets_beside_one_with_a_FIFO()
    {
        var root = Root(nameof(The_catalog_of_an_SSH_store_lists_the_good_sets_beside_one_with_a_FIFO));
        await SmallFiles.WriteSetAsync(new LocalBackupStore(root), "vm", "20261130-220000");
        SmallFiles.MakeFifo(Path.Combine(root, Manifest));
        try
        {
            await using var store = _server.Store("good", root);

            var listing = await Task.Run(() => BackupCatalog.ListAsync(store, null, CancellationToken.None)).WaitAsync(TimeSpan.FromSeconds(20));

            Assert.Equal("20261130-220000", Assert.Single(listing.Sets).RunId);
            var unreadable = Assert.Single(listing.Unreadable);
            Assert.Equal(ErrorIds.BackupSetUnreadable, unreadable.Error.ErrorId);
            Assert.Contains("FIFO", unreadable.Error.Message, StringComparison.Ordinal);
        }
        finally
        {
            SmallFiles.ReleaseFifos(root);
        }
    }
}

internal static class SmallFiles
{
    /// <summary>The refusal, which must come soon: a read that hangs fails the test instead of hanging it.</summary>
    public static async Task<BackupException> RefusedAsync(Func<Task<byte[]>> read)
    {
        // On a thread of its own: a read that blocks in open() must not block the test.
        var error = await Assert.ThrowsAnyAsync<BackupException>(() => Task.Run(read).WaitAsync(TimeSpan.FromSeconds(15)));
        Assert.Equal(ErrorIds.BackupSetUnreadable, error.ErrorId);
        return error;
    }

    public static void MakeFifo(string path) => Assert.Equal(0, TestSshServer.Run("mkfifo", ["-m", "600", path]).Code);

    /// <summary>Opens every FIFO under the folder for reading and writing and closes it: whatever still waits to open
    /// one (a read that hung) gets it and then its end, so no thread or sshd is left blocked.</summary>
    public static void ReleaseFifos(string root) =>
        TestSshServer.Run("sh", ["-c", "find \"$1\" -type p -exec sh -c 'exec 3<>\"$1\"' sh {} \\;", "sh", root]);

    /// <summary>A plain Complete set of one raw disk, as Copy-VmDisk leaves it.</summary>
    public static async Task WriteSetAsync(IBackupStore store, string domain, string runId)
    {
        var folder = BackupNames.SetFolder(domain, runId);
        await store.CreateFolderAsync(folder, CancellationToken.None);
        await store.WriteSmallFileAsync(folder + "/disk", [], CancellationToken.None);
        await BackupSet.SaveAsync(store, folder, new BackupManifest
        {
            Format = CheckedManifest.EarlierFormat,
            DomainName = domain,
            RunId = runId,
            Status = BackupSetStatus.Complete,
            Consistency = BackupConsistency.Quiesced,
            SnapshotName = BackupNames.DefaultSnapshotName,
            StartedUtc = BackupNames.TryParseRunId(runId, out var utc) ? utc : DateTime.UtcNow,
            Disks = [new ManifestDisk { Target = "vda", Source = $"/vms/{domain}/disk", Format = "raw", File = "disk", SizeBytes = 0, DataBytes = 0,
                // A Complete set names each copy's digest (CheckedManifest): that of the empty file.
                ContentDigest = "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855" }],
        }, CancellationToken.None);
    }
}
