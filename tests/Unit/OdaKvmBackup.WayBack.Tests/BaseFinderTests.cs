using OdaKvmBackup.WayBack.Tests.Support;

namespace OdaKvmBackup.WayBack.Tests;

/// <summary>Issue 15: which set an incremental copy of a disk starts from, on real sets in a real folder. A wrong base
/// costs a full copy at worst, but a forged one must never be taken: its copy would be cloned into the new set.</summary>
public sealed class BaseFinderTests : IDisposable
{
    private const string Vm = "vm1";
    private static readonly DateTime T0 = new(2026, 12, 5, 1, 0, 0, DateTimeKind.Utc);
    private static readonly string Run = BackupNames.RunId(T0.AddDays(1));
    private readonly TempFolder _root = new();
    private readonly TempFolder _vms = new();
    private readonly LocalBackupStore _store;

    public BaseFinderTests() => _store = new LocalBackupStore(_root.Path);

    public void Dispose()
    {
        _root.Dispose();
        _vms.Dispose();
    }

    /// <summary>vdb as the journal has it before the copy (no SizeBytes yet): a raw file of <paramref name="size"/> bytes.</summary>
    private DiskRecord Vdb(long size = Sets.DiskSize, string format = "raw", long? sizeBytes = null, long? virtualSize = null)
    {
        var source = _vms.Combine("data-" + Guid.NewGuid().ToString("N")[..6]);
        using (var stream = File.Create(source))
            stream.SetLength(size);
        return new DiskRecord { Target = "vdb", Source = source, Format = format, SetFile = "data", SizeBytes = sizeBytes, VirtualSizeBytes = virtualSize };
    }

    private Task<BaseChoice> Find(DiskRecord disk, string? runId = null) =>
        BaseFinder.FindAsync(_store, Vm, runId ?? Run, disk, CancellationToken.None);

    private string SetPath(string folder, params string[] parts) => _root.Combine([.. folder.Split('/'), .. parts]);

    [Fact]
    public async Task With_no_earlier_set_there_is_no_base()
    {
        var choice = await Find(Vdb());

        Assert.Null(choice.Base);
        Assert.Equal("no earlier Complete set of vm1 at this destination", choice.WhyNone);
    }

    [Fact]
    public async Task The_newest_complete_set_with_the_same_disk_is_the_base_and_its_list_is_the_one_its_manifest_records()
    {
        await Sets.WriteV3Async(_root.Path, Vm, T0.AddHours(-1));
        var newest = await Sets.WriteV3Async(_root.Path, Vm, T0);

        var choice = await Find(Vdb());

        var found = Assert.IsType<DiskBase>(choice.Base);
        Assert.Null(choice.WhyNone);
        Assert.Equal(BackupNames.RunId(T0), found.RunId);
        Assert.Equal(newest + "/data", found.CopyPath);
        Assert.Equal(newest + "/data.digests", found.DigestListPath);
        var manifest = (await BackupSet.LoadAsync(_store, newest, CancellationToken.None)).Manifest;
        Assert.Equal(manifest.Disks.Single(d => d.Target == "vdb").Digests, found.List.Sha256);
        Assert.Equal(Sets.DiskSize, found.List.FileSize);
        // The list is the copy's: the copy as stored reads to the same list.
        Assert.Equal(found.List.Sha256, (await SparseCopy.DigestListAsync(SetPath(newest, "data"), null, CancellationToken.None)).Sha256);
    }

    [Fact]
    public async Task On_a_server_only_the_manifests_and_the_base_list_are_read_never_a_copy()
    {
        await Sets.WriteV3Async(_root.Path, Vm, T0.AddHours(-1));
        var newest = await Sets.WriteV3Async(_root.Path, Vm, T0);
        var remote = new FakeRemoteStore(_root.Path);

        var choice = await BaseFinder.FindAsync(remote, Vm, Run, Vdb(), CancellationToken.None);

        Assert.Equal(newest + "/data", choice.Base?.CopyPath);
        Assert.Equal([newest + "/data.digests"], remote.Opened);
        Assert.Equal(0, remote.SegmentDigestCalls);
    }

    [Fact]
    public async Task Sets_that_are_not_complete_are_not_earlier_or_are_not_sets_of_the_store_layout_are_passed_over()
    {
        var good = await Sets.WriteV3Async(_root.Path, Vm, T0);
        await Sets.WriteV3Async(_root.Path, Vm, T0.AddHours(1), BackupSetStatus.Incomplete);
        await Sets.WriteV3Async(_root.Path, Vm, T0.AddHours(2), BackupSetStatus.InProgress);
        await Sets.WriteV3Async(_root.Path, Vm, T0.AddDays(2));                 // after the run: never its base
        await Sets.WriteV3Async(_root.Path, Vm, T0.AddDays(1));                 // the run's own folder
        await Sets.WriteV3Async(_root.Path, "vm2", T0.AddHours(3));             // another VM
        // A set kept aside by Copy-VmDisk -Force, and a copy of a set under another name: not run ids.
        var replaced = await Sets.WriteV3Async(_root.Path, Vm, T0.AddHours(4));
        Directory.Move(SetPath(replaced), SetPath(replaced) + ".replaced-20261205-060000");
        var renamed = await Sets.WriteV3Async(_root.Path, Vm, T0.AddHours(5));
        Directory.Move(SetPath(renamed), _root.Combine(Vm, "latest"));

        var choice = await Find(Vdb());

        Assert.Equal(BackupNames.RunId(T0), choice.Base?.RunId);
        Assert.Equal(good + "/data", choice.Base?.CopyPath);
    }

    [Fact]
    public async Task A_set_of_the_earlier_format_is_no_base_and_the_reason_says_so()
    {
        await Sets.WriteAsync(_store, _root.Path, Vm, T0);

        var choice = await Find(Vdb());

        Assert.Null(choice.Base);
        Assert.Equal("the last Complete set 20261205-010000 was written by an earlier version of OdaKvmBackup (OdaKvmBackup/2) and has no digest lists", choice.WhyNone);
    }

    [Fact]
    public async Task A_disk_of_another_size_format_or_virtual_size_or_one_the_set_does_not_hold_has_no_base()
    {
        await Sets.WriteV3Async(_root.Path, Vm, T0, edit: m => m.Disks[1].VirtualSizeBytes = Sets.DiskSize);

        var resized = await Find(Vdb(size: Sets.DiskSize + 65536));
        var qcow2 = await Find(Vdb(format: "qcow2"));
        var virtualSize = await Find(Vdb(virtualSize: 2 * Sets.DiskSize));
        var other = await Find(new DiskRecord { Target = "vdc", Source = Vdb().Source, Format = "raw", SetFile = "vdc" });
        var sameVirtualSize = await Find(Vdb(virtualSize: Sets.DiskSize));

        Assert.Equal($"the last Complete set 20261205-010000 holds vdb at another size ({Sets.DiskSize} bytes; the disk now has {Sets.DiskSize + 65536})", resized.WhyNone);
        Assert.Equal("the last Complete set 20261205-010000 holds vdb as raw, not qcow2", qcow2.WhyNone);
        Assert.Equal($"the last Complete set 20261205-010000 holds vdb at another virtual size ({Sets.DiskSize} bytes; the disk now has {2 * Sets.DiskSize})", virtualSize.WhyNone);
        Assert.Equal("the last Complete set 20261205-010000 holds no copy of vdc", other.WhyNone);
        Assert.All(new[] { resized, qcow2, virtualSize, other }, c => Assert.Null(c.Base));
        Assert.NotNull(sameVirtualSize.Base);
    }

    [Fact]
    public async Task The_journal_size_when_known_is_compared_and_else_the_size_of_the_disk_file()
    {
        await Sets.WriteV3Async(_root.Path, Vm, T0);

        // The source file is smaller, but the journal says the copy has the set's size: the journal wins.
        Assert.NotNull((await Find(Vdb(size: 4096, sizeBytes: Sets.DiskSize))).Base);
        Assert.Null((await Find(Vdb(size: Sets.DiskSize, sizeBytes: Sets.DiskSize * 2))).Base);
        var unreadable = await Find(new DiskRecord { Target = "vdb", Source = _vms.Combine("gone"), Format = "raw", SetFile = "data" });
        Assert.Null(unreadable.Base);
        Assert.StartsWith($"the size of vdb's file '{_vms.Combine("gone")}' cannot be read", unreadable.WhyNone, StringComparison.Ordinal);
    }

    [Fact]
    public async Task A_list_whose_hash_differs_from_its_manifest_is_no_base_and_an_older_set_with_a_good_list_is_taken()
    {
        var older = await Sets.WriteV3Async(_root.Path, Vm, T0.AddHours(-1));
        var newest = await Sets.WriteV3Async(_root.Path, Vm, T0);
        Sets.FlipByte(SetPath(newest, "data.digests"), BlockDigestList.HeaderSize + 3);

        var choice = await Find(Vdb());

        Assert.Equal(BackupNames.RunId(T0.AddHours(-1)), choice.Base?.RunId);
        Assert.Equal(older + "/data", choice.Base?.CopyPath);

        File.Delete(SetPath(older, "data.digests"));
        var none = await Find(Vdb());
        Assert.Null(none.Base);
        Assert.StartsWith("the digest list of vdb in set 20261205-010000 cannot be used: its digest list ", none.WhyNone, StringComparison.Ordinal);
        Assert.Contains("does not match backup.json", none.WhyNone, StringComparison.Ordinal);
        Assert.EndsWith(", and no older Complete set has a usable copy of vdb either", none.WhyNone, StringComparison.Ordinal);
    }

    [Fact]
    public async Task A_list_that_is_missing_too_long_or_a_link_is_no_base()
    {
        var set = await Sets.WriteV3Async(_root.Path, Vm, T0);
        var list = SetPath(set, "data.digests");
        var good = await File.ReadAllBytesAsync(list);

        File.Delete(list);
        var missing = await Find(Vdb());
        await File.WriteAllBytesAsync(list, [.. good, 0]);
        var tooLong = await Find(Vdb());
        // The right list, but reached through a link (to a file outside the set): a set's files are its own.
        // The link's own size (what a listing shows) is made the list's, so that only opening it can refuse it.
        var folder = _root.Combine(new string('o', 200));
        Directory.CreateDirectory(folder);
        var outside = Path.Combine(folder, new string('l', good.Length - folder.Length - 1));
        await File.WriteAllBytesAsync(outside, good);
        File.Delete(list);
        File.CreateSymbolicLink(list, outside);
        var link = await Find(Vdb());

        Assert.Null(missing.Base);
        Assert.Contains("data.digests' is missing", missing.WhyNone, StringComparison.Ordinal);
        Assert.Null(tooLong.Base);
        Assert.Contains($"holds {good.Length + 1} bytes where the list of a {Sets.DiskSize}-byte copy holds {good.Length}", tooLong.WhyNone, StringComparison.Ordinal);
        Assert.Null(link.Base);
        Assert.StartsWith("the digest list of vdb in set 20261205-010000 cannot be used", link.WhyNone, StringComparison.Ordinal);
        Assert.Contains("is a symbolic link, not a regular file", link.WhyNone, StringComparison.Ordinal);
    }

    [Fact]
    public async Task A_list_whose_header_describes_another_size_is_no_base_even_when_the_manifest_records_its_hash()
    {
        // A forged set: the list of a smaller file, its hash written into the manifest, padded to the right length.
        var otherFile = _vms.Combine("small");
        using (var stream = File.Create(otherFile))
            stream.SetLength(Sets.DiskSize - BlockDigestList.BlockSize);
        var small = await SparseCopy.DigestListAsync(otherFile, null, CancellationToken.None);
        var forged = small.Bytes.ToArray().Concat(new byte[BlockDigestList.SerializedLength(Sets.DiskSize) - small.Bytes.Length]).ToArray();
        var forgedHash = Convert.ToHexString(System.Security.Cryptography.SHA256.HashData(forged)).ToLowerInvariant();
        var set = await Sets.WriteV3Async(_root.Path, Vm, T0, edit: m => m.Disks[1].Digests = forgedHash);
        await File.WriteAllBytesAsync(SetPath(set, "data.digests"), forged);

        var choice = await Find(Vdb());

        Assert.Null(choice.Base);
        Assert.Contains($"it describes a file of {Sets.DiskSize - BlockDigestList.BlockSize} bytes, not the {Sets.DiskSize} bytes of the copy", choice.WhyNone, StringComparison.Ordinal);
    }

    [Fact]
    public async Task A_copy_that_is_missing_or_of_another_size_than_its_manifest_says_is_no_base()
    {
        var set = await Sets.WriteV3Async(_root.Path, Vm, T0);
        File.Delete(SetPath(set, "data"));
        var missing = await Find(Vdb());
        File.WriteAllBytes(SetPath(set, "data"), new byte[4096]);
        var shorter = await Find(Vdb());

        Assert.Equal("the copy of vdb in the last Complete set 20261205-010000 is missing", missing.WhyNone);
        Assert.Equal($"the copy of vdb in the last Complete set 20261205-010000 holds 4096 bytes, not the {Sets.DiskSize} its manifest says", shorter.WhyNone);
    }

    [Fact]
    public async Task A_forged_manifest_naming_a_file_outside_its_set_is_never_a_base()
    {
        // The newest set's manifest names '../x' (a copy in another folder) for vdb, with that copy's list and hash.
        var older = await Sets.WriteV3Async(_root.Path, Vm, T0.AddHours(-1));
        var olderVdb = (await BackupSet.LoadAsync(_store, older, CancellationToken.None)).Manifest.Disks[1];
        var forged = await Sets.WriteV3Async(_root.Path, Vm, T0, edit: m => m.Disks[1] = new ManifestDisk
        {
            Target = "vdb", Source = "/vms/vm1/data", Format = "raw", File = "../" + BackupNames.RunId(T0.AddHours(-1)) + "/data",
            SizeBytes = Sets.DiskSize, DataBytes = 65536, Digests = olderVdb.Digests, Verified = true,
        });

        var choice = await Find(Vdb());

        // The forged set cannot be trusted as a whole: the base is the older set's own copy, by its own name.
        Assert.Equal(older + "/data", choice.Base?.CopyPath);
        Directory.Delete(SetPath(older), recursive: true);
        var none = await Find(Vdb());
        Assert.Null(none.Base);
        Assert.Equal("no earlier Complete set of vm1 at this destination (1 set could not be trusted: Get-KvmBackup names it)", none.WhyNone);
        _ = forged;
    }

    [Fact]
    public async Task A_manifest_naming_a_copy_as_another_copys_digest_list_is_refused_and_is_no_base()
    {
        // vdb's File is vda's list: the list of "boot" would be read as a copy, and a copy as a list.
        var set = await Sets.WriteV3Async(_root.Path, Vm, T0, edit: m => m.Disks[1] = new ManifestDisk
        {
            Target = "vdb", Source = "/vms/vm1/data", Format = "raw", File = "boot.digests", SizeBytes = Sets.DiskSize, DataBytes = 65536,
            Digests = m.Disks[1].Digests, Verified = true,
        });

        var error = await Assert.ThrowsAsync<BackupException>(() => BackupSet.LoadAsync(_store, set, CancellationToken.None));
        Assert.Equal(ErrorIds.BackupSetUnreadable, error.ErrorId);
        Assert.Contains("the File 'boot.digests' is the name of the digest list of the copy 'boot'", error.Message, StringComparison.Ordinal);
        Assert.Null((await Find(Vdb())).Base);
    }
}
