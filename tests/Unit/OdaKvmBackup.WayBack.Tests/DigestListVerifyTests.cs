using OdaKvmBackup.Core.Tests.Support;
using OdaKvmBackup.WayBack.Tests.Support;

namespace OdaKvmBackup.WayBack.Tests;

/// <summary>Issue 15: Test-KvmBackup on sets of format OdaKvmBackup/3, whose copies are described by block digest
/// lists: read back where they lie, locally and on a (fake, local-folder) server, each set on its own.</summary>
public sealed class DigestListVerifyTests : IDisposable
{
    private static readonly DateTime T0 = new(2026, 12, 5, 1, 0, 0, DateTimeKind.Utc);
    private readonly TempFolder _root = new();
    private readonly FakeHost _host = new();

    public void Dispose() => _root.Dispose();

    private VerifyService Verify(RecordingSink? sink = null) => new(_host.Tools.QemuImg, sink ?? new RecordingSink());

    private async Task<BackupSetInfo> Load(IBackupStore store, string folder) => (await BackupCatalog.LoadAsync(store, folder, CancellationToken.None))!;

    private string InSet(string folder, string file) => _root.Combine([.. folder.Split('/'), file]);

    [Fact]
    public async Task A_set_based_on_another_verifies_with_no_other_set_present_and_its_copies_are_only_read()
    {
        var store = new LocalBackupStore(_root.Path);
        var folder = await Sets.WriteV3Async(_root.Path, "vm1", T0, basedOn: "20261204-010000"); // that set is not there
        var set = await Load(store, folder);
        var before = set.Disks.Select(d => File.ReadAllBytes(d.Location)).ToList();

        var result = await Verify().VerifyAsync(set, store, CancellationToken.None);

        Assert.Empty(result.Errors);
        Assert.True(result.Passed);
        Assert.All(result.Disks, d => Assert.Equal("digest list equal to backup.json's, and the copy read from storage on this host equal to it (1 segments)", d.DigestCheck));
        Assert.Equal(before, set.Disks.Select(d => File.ReadAllBytes(d.Location)));
        Assert.Equal(["vm1"], Directory.GetDirectories(_root.Path).Select(Path.GetFileName));
        Assert.Single(Directory.GetDirectories(_root.Combine("vm1")));
    }

    [Fact]
    public async Task One_flipped_byte_fails_the_set_naming_the_segment_and_the_block()
    {
        var store = new LocalBackupStore(_root.Path);
        var folder = await Sets.WriteV3Async(_root.Path, "vm1", T0);
        Sets.FlipByte(InSet(folder, "data"), (1 << 20) + 100);

        var result = await Verify().VerifyAsync(await Load(store, folder), store, CancellationToken.None);

        Assert.False(result.Passed);
        Assert.Equal([true, false], result.Disks.Select(d => d.Passed));
        var error = Assert.Single(result.Errors);
        Assert.Equal(ErrorIds.BackupCopyDamaged, error.ErrorId);
        Assert.Contains("vdb in the set vm1 20261205-010000", error.Message, StringComparison.Ordinal);
        Assert.Contains($"segment 0 (bytes 0 to {Sets.DiskSize - 1}), from the 64 KiB block at byte {1 << 20}, reads differently from storage on this host than its digest list says", error.Message, StringComparison.Ordinal);
    }

    [Fact]
    public async Task A_list_that_does_not_match_its_manifest_fails_the_set_though_the_copy_is_good()
    {
        var store = new LocalBackupStore(_root.Path);
        var folder = await Sets.WriteV3Async(_root.Path, "vm1", T0);
        Sets.FlipByte(InSet(folder, "data.digests"), BlockDigestList.HeaderSize + 1);
        File.Delete(InSet(folder, "boot.digests"));

        var result = await Verify().VerifyAsync(await Load(store, folder), store, CancellationToken.None);

        Assert.Equal([false, false], result.Disks.Select(d => d.Passed));
        Assert.Equal([ErrorIds.BackupCopyDamaged, ErrorIds.BackupCopyDamaged], result.Errors.Select(e => e.ErrorId));
        Assert.Contains("boot.digests' is missing (the copy itself reads back as backup.json says: it can still be restored", result.Errors[0].Message, StringComparison.Ordinal);
        Assert.Contains("data.digests' does not match backup.json", result.Errors[1].Message, StringComparison.Ordinal);
    }

    [Fact]
    public async Task A_remote_set_is_checked_on_the_server_by_its_list_and_only_the_lists_cross_the_network()
    {
        var remote = new FakeRemoteStore(_root.Path);
        var folder = await Sets.WriteV3Async(_root.Path, "vm1", T0);

        var result = await Verify().VerifyAsync(await Load(remote, folder), remote, CancellationToken.None);

        Assert.Empty(result.Errors);
        Assert.Equal("on the server", result.ReadWhere);
        Assert.Equal([folder + "/boot.digests", folder + "/data.digests"], remote.Opened);
        Assert.Equal(2, remote.SegmentDigestCalls);
        Assert.All(result.Disks, d => Assert.Equal("digest list equal to backup.json's, and 1 segment digests equal to it and 0 segments of zeros read as zeros (read on the server)", d.DigestCheck));
    }

    [Fact]
    public async Task A_flipped_byte_in_a_remote_copy_is_named_with_its_segment_and_data_in_a_segment_of_zeros_with_its_offset()
    {
        // 40 MiB: segment 0 holds data, segment 1 is all zeros (checked as zeros), segment 2 is short.
        const long size = 40L << 20;
        var remote = new FakeRemoteStore(_root.Path);
        var folder = await Sets.WriteV3Async(_root.Path, "vm1", T0, size: size);
        var set = await Load(remote, folder);
        var good = await Verify().VerifyAsync(set, remote, CancellationToken.None);
        Sets.FlipByte(InSet(folder, "data"), (1 << 20) + 5);
        Sets.FlipByte(InSet(folder, "boot"), (20L << 20) + 3);

        var result = await Verify().VerifyAsync(set, remote, CancellationToken.None);

        Assert.True(good.Passed);
        Assert.All(good.Disks, d => Assert.Contains("2 segment digests equal to it and 1 segments of zeros read as zeros", d.DigestCheck, StringComparison.Ordinal));
        Assert.Equal([ErrorIds.BackupCopyDamaged, ErrorIds.BackupCopyDamaged], result.Errors.Select(e => e.ErrorId));
        Assert.Contains($"segment 1 (bytes {16L << 20} to {(32L << 20) - 1}) holds data on the server (from byte {(20L << 20) + 3}) where its digest list says it holds only zeros", result.Errors[0].Message, StringComparison.Ordinal);
        Assert.Contains($"segment 0 (bytes 0 to {(16L << 20) - 1}) reads differently on the server than its digest list says", result.Errors[1].Message, StringComparison.Ordinal);
        Assert.All(remote.Opened, p => Assert.EndsWith(".digests", p, StringComparison.Ordinal));
    }

    [Fact]
    public async Task A_remote_copy_whose_list_is_forged_cannot_be_checked_and_fails()
    {
        var remote = new FakeRemoteStore(_root.Path);
        var folder = await Sets.WriteV3Async(_root.Path, "vm1", T0);
        // Too long: the extra bytes are refused before the list is parsed or its segments trusted.
        File.AppendAllText(InSet(folder, "data.digests"), "x");

        var result = await Verify().VerifyAsync(await Load(remote, folder), remote, CancellationToken.None);

        var error = Assert.Single(result.Errors);
        Assert.Contains("where the list of a 3145728-byte copy holds", error.Message, StringComparison.Ordinal);
        Assert.Contains("without it the copy cannot be checked on the server", error.Message, StringComparison.Ordinal);
        Assert.Equal(1, remote.SegmentDigestCalls); // vda only
    }

    [Fact]
    public async Task Sets_of_both_formats_at_one_destination_each_verify_their_own_way()
    {
        var store = new LocalBackupStore(_root.Path);
        var v2 = await Sets.WriteAsync(store, _root.Path, "vm1", T0.AddDays(-1));
        var v3 = await Load(store, await Sets.WriteV3Async(_root.Path, "vm1", T0));

        var old = await Verify().VerifyAsync(v2, store, CancellationToken.None);
        var now = await Verify().VerifyAsync(v3, store, CancellationToken.None);

        Assert.True(old.Passed);
        Assert.True(now.Passed);
        Assert.All(old.Disks, d => Assert.StartsWith("content digest equal to backup.json's", d.DigestCheck, StringComparison.Ordinal));
        Assert.All(now.Disks, d => Assert.StartsWith("digest list equal to backup.json's", d.DigestCheck, StringComparison.Ordinal));
    }
}
