using OdaKvmBackup.Core.Tests.Support;
using OdaKvmBackup.WayBack.Tests.Support;

namespace OdaKvmBackup.WayBack.Tests;

public class CatalogAndVerifyTests : IDisposable
{
    private static readonly DateTime T0 = new(2026, 11, 20, 22, 0, 0, DateTimeKind.Utc);
    private readonly TempFolder _root = new();
    private readonly FakeHost _host = new();

    public void Dispose() => _root.Dispose();

    private VerifyService Verify(RecordingSink? sink = null) => new(_host.Tools.QemuImg, sink ?? new RecordingSink());

    [Theory]
    [InlineData("/backup/vm1/20261128-101500", "/backup", "vm1/20261128-101500")]
    [InlineData("/backup/vm1/20261128-101500/", "/backup", "vm1/20261128-101500")]
    [InlineData("/vm1/20261128-101500", "/", "vm1/20261128-101500")]
    [InlineData("root@srv:/backup/vm1/20261128-101500", "root@srv:/backup", "vm1/20261128-101500")]
    [InlineData("root@srv:/vm1/20261128-101500", "root@srv:/", "vm1/20261128-101500")]
    public void A_set_folder_splits_into_its_destination_and_its_set(string path, string destination, string set)
    {
        Assert.Equal((destination, set), BackupCatalog.SplitSetPath(path));
    }

    [Theory]
    [InlineData("/backup")]
    [InlineData("/backup/vm1")]
    [InlineData("/backup/vm1/latest")]
    public void A_path_that_is_not_a_set_folder_does_not_split(string path) => Assert.Null(BackupCatalog.SplitSetPath(path));

    [Fact]
    public async Task The_catalog_lists_every_set_by_domain_and_time_and_reports_unreadable_manifests()
    {
        var store = new LocalBackupStore(_root.Path);
        await Sets.WriteAsync(store, _root.Path, "vm2", T0);
        await Sets.WriteAsync(store, _root.Path, "vm1", T0.AddDays(1));
        await Sets.WriteAsync(store, _root.Path, "vm1", T0, BackupSetStatus.Incomplete);
        Directory.CreateDirectory(_root.Combine("vm1", "not-a-run"));
        Directory.CreateDirectory(_root.Combine("vm1", "20261101-000000"));          // no backup.json: not a set
        Directory.CreateDirectory(_root.Combine("vm3", "20261101-000000"));
        File.WriteAllText(_root.Combine("vm3", "20261101-000000", "backup.json"), "{ not json");

        var listing = await BackupCatalog.ListAsync(store, null, CancellationToken.None);

        Assert.Equal(["vm1 20261120-220000", "vm1 20261121-220000", "vm2 20261120-220000"], listing.Sets.Select(s => s.DomainName + " " + s.RunId));
        var bad = Assert.Single(listing.Unreadable);
        Assert.Equal(ErrorIds.BackupSetUnreadable, bad.Error.ErrorId);
        Assert.EndsWith("vm3/20261101-000000", bad.Location, StringComparison.Ordinal);
        var set = listing.Sets[1];
        Assert.Equal(2 * Sets.DiskSize, set.SizeBytes);
        Assert.Equal(2 * 64 * 1024, set.DataBytes);
        Assert.Equal(_root.Combine("vm1", "20261121-220000", "boot"), set.Disks[0].Location);

        Assert.Equal(["vm1 20261121-220000", "vm2 20261120-220000"], BackupCatalog.Filter(listing.Sets, [], latest: true, DateTime.UtcNow).Select(s => s.DomainName + " " + s.RunId));
        Assert.Equal(["vm1 20261120-220000"], BackupCatalog.Filter(listing.Sets, [BackupSetStatus.Incomplete], latest: false, DateTime.UtcNow).Select(s => s.DomainName + " " + s.RunId));
        var onlyVm2 = await BackupCatalog.ListAsync(store, name => name == "vm2", CancellationToken.None);
        Assert.Equal(["vm2"], onlyVm2.Sets.Select(s => s.DomainName));
    }

    [Fact]
    public async Task A_good_local_set_passes_and_its_copies_are_only_read()
    {
        var store = new LocalBackupStore(_root.Path);
        var set = await Sets.WriteAsync(store, _root.Path, "vm1", T0);
        var before = set.Disks.Select(d => (File.GetLastWriteTimeUtc(d.Location), File.ReadAllBytes(d.Location))).ToList();

        var result = await Verify().VerifyAsync(set, store, CancellationToken.None);
        var errors = result.Errors;

        Assert.Empty(errors);
        Assert.True(result.Passed);
        Assert.Equal("on this host", result.ReadWhere);
        Assert.Equal(["no errors", "not applicable (raw)"], result.Disks.Select(d => d.ImageCheck));
        Assert.Equal(before.Select(b => b.Item1), set.Disks.Select(d => File.GetLastWriteTimeUtc(d.Location)));
        Assert.Equal(before.Select(b => b.Item2), set.Disks.Select(d => File.ReadAllBytes(d.Location)));
    }

    [Fact]
    public async Task One_changed_byte_fails_the_set_and_names_the_disk()
    {
        var store = new LocalBackupStore(_root.Path);
        var set = await Sets.WriteAsync(store, _root.Path, "vm1", T0);
        Sets.FlipByte(set.Disks[1].Location, (1 << 20) + 100);

        var result = await Verify().VerifyAsync(set, store, CancellationToken.None);
        var errors = result.Errors;

        Assert.False(result.Passed);
        Assert.Equal([true, false], result.Disks.Select(d => d.Passed));
        var error = Assert.Single(errors);
        Assert.Equal(ErrorIds.BackupCopyDamaged, error.ErrorId);
        Assert.Contains("vdb in the set vm1 20261120-220000", error.Message, StringComparison.Ordinal);
        Assert.Contains("content digest", error.Message, StringComparison.Ordinal);
        Assert.NotNull(error.RecommendedAction);
    }

    [Fact]
    public async Task A_missing_copy_a_copy_of_another_size_and_a_qcow2_that_qemu_img_check_rejects_all_fail()
    {
        var store = new LocalBackupStore(_root.Path);
        var set = await Sets.WriteAsync(store, _root.Path, "vm1", T0);
        File.Delete(set.Disks[1].Location);
        _host.ImageChecks[set.Disks[0].Location] = (2, "ERROR cluster 5 refcount=0 reference=1\n1 errors were found on the image.");

        var result = await Verify().VerifyAsync(set, store, CancellationToken.None);
        var errors = result.Errors;

        Assert.Equal([ErrorIds.BackupCopyDamaged, ErrorIds.BackupCopyMissing], errors.Select(e => e.ErrorId));
        Assert.Contains("corruptions", result.Disks[0].ImageCheck, StringComparison.Ordinal);
        Assert.Contains(_host.CommandLines, c => c[0] == "qemu-img" && c[1] == "check" && c.Contains("-U") && !c.Contains("-r"));

        await Sets.WriteAsync(store, _root.Path, "vm2", T0);
        var grown = (await BackupCatalog.LoadAsync(store, "vm2/20261120-220000", CancellationToken.None))!;
        await using (var f = File.OpenWrite(grown.Disks[0].Location))
            f.SetLength(Sets.DiskSize + 4096);
        var sized = (await Verify().VerifyAsync(grown, store, CancellationToken.None)).Errors;
        Assert.Contains("backup.json says", Assert.Single(sized).Message, StringComparison.Ordinal);
    }

    [Fact]
    public async Task A_copy_whose_qcow2_names_a_backing_file_fails_and_qemu_img_check_never_opens_it()
    {
        var store = new LocalBackupStore(_root.Path);
        var set = await Sets.WriteAsync(store, _root.Path, "vm1", T0);
        _host.ImageInfos["boot"] = "{ \"format\": \"qcow2\", \"virtual-size\": 3145728, \"backing-filename\": \"/etc/shadow\", \"full-backing-filename\": \"/etc/shadow\" }";
        var result = await Verify().VerifyAsync(set, store, CancellationToken.None);
        var errors = result.Errors;
        Assert.False(result.Passed);
        var error = Assert.Single(errors);
        Assert.Equal("BackupCopyUnsafe", error.ErrorId);
        Assert.Contains("/etc/shadow", error.Message, StringComparison.Ordinal);
        Assert.False(result.Disks.Single(d => d.Target == "vda").Passed);
        Assert.True(result.Disks.Single(d => d.Target == "vdb").Passed);
        Assert.DoesNotContain(_host.CommandLines, c => c[0] == "qemu-img" && c[1] == "check"); // qemu-img check would open /etc/shadow
    }

    [Fact]
    public async Task A_set_that_is_not_Complete_fails_without_being_read()
    {
        var store = new LocalBackupStore(_root.Path);
        var set = await Sets.WriteAsync(store, _root.Path, "vm1", T0, BackupSetStatus.Incomplete);
        var result = await Verify().VerifyAsync(set, store, CancellationToken.None);
        var errors = result.Errors;
        Assert.False(result.Passed);
        Assert.Equal(ErrorIds.BackupSetNotComplete, Assert.Single(errors).ErrorId);
        Assert.Empty(_host.CommandLines);
    }

    // ------------------------------------------------------------ the seam for the SSH store

    [Fact]
    public async Task A_remote_set_is_checked_with_segment_digests_computed_where_it_lies_never_read_over_the_network()
    {
        var remote = new FakeRemoteStore(_root.Path);
        var set = await Sets.WriteAsync(remote, _root.Path, "vm1", T0, segmentSize: 1 << 20);

        var result = await Verify().VerifyAsync(set, remote, CancellationToken.None);
        var errors = result.Errors;

        Assert.Empty(errors);
        Assert.Equal("on the server", result.ReadWhere);
        Assert.Equal(2, remote.SegmentDigestCalls);
        Assert.Equal(0, remote.OpenReadCalls);
        Assert.All(result.Disks, d => Assert.Contains("read on the server", d.DigestCheck, StringComparison.Ordinal));
        Assert.Equal("not run (the server's store cannot run qemu-img)", result.Disks[0].ImageCheck);
        Assert.Empty(_host.CommandLines); // qemu-img check never runs on this host for a remote copy
    }

    [Fact]
    public async Task A_damaged_remote_copy_is_named_with_its_segment()
    {
        var remote = new FakeRemoteStore(_root.Path);
        var set = await Sets.WriteAsync(remote, _root.Path, "vm1", T0, segmentSize: 1 << 20);
        Sets.FlipByte(_root.Combine("vm1", set.RunId, "data"), (2 << 20) + 7);

        var errors = (await Verify().VerifyAsync(set, remote, CancellationToken.None)).Errors;

        var error = Assert.Single(errors);
        Assert.Contains("segment 2", error.Message, StringComparison.Ordinal);
        Assert.Contains("root@backup-server:", error.Message, StringComparison.Ordinal);
        Assert.Equal(0, remote.OpenReadCalls);
    }

    [Fact]
    public async Task A_remote_store_that_can_run_qemu_img_checks_its_qcow2_copies_there()
    {
        var remote = new FakeCheckingRemoteStore(_root.Path, "qemu-img check found corruptions: 3 errors");
        var set = await Sets.WriteAsync(remote, _root.Path, "vm1", T0, segmentSize: 1 << 20);
        var errors = (await Verify().VerifyAsync(set, remote, CancellationToken.None)).Errors;
        Assert.Equal(["vm1/20261120-220000/boot"], remote.Checked);
        Assert.Contains("corruptions", Assert.Single(errors).Message, StringComparison.Ordinal);
    }

    [Fact]
    public async Task A_remote_set_without_segment_digests_is_read_over_the_network_and_said_so()
    {
        var remote = new FakeRemoteStore(_root.Path);
        var set = await Sets.WriteAsync(remote, _root.Path, "vm1", T0);
        var sink = new RecordingSink();

        var result = await Verify(sink).VerifyAsync(set, remote, CancellationToken.None);
        var errors = result.Errors;

        Assert.True(result.Passed);
        Assert.Equal(2, remote.OpenReadCalls);
        Assert.Equal(2, sink.Warnings.Count(w => w.Contains("read over the network", StringComparison.Ordinal)));
    }

    [Fact]
    public async Task A_copy_streamed_through_a_reader_gets_the_same_content_digest_as_the_sparse_copy_engine()
    {
        var store = new LocalBackupStore(_root.Path);
        var set = await Sets.WriteAsync(store, _root.Path, "vm1", T0);
        foreach (var disk in set.Disks)
        {
            await using var reader = await store.OpenReadAsync("vm1/" + set.RunId + "/" + disk.File, CancellationToken.None);
            var streamed = await StreamCopy.CopyAsync(reader, null, null, CancellationToken.None, legacyContentDigest: true);
            Assert.Equal(disk.ContentDigest, streamed.ContentDigest);
            Assert.Equal(disk.DataBytes, streamed.DataBytes);
        }
    }
}
