using OdaKvmBackup.WayBack.Tests.Support;

namespace OdaKvmBackup.WayBack.Tests;

/// <summary>Issue 15: what Get-KvmBackup shows of how each set was made (bytes sent, how stored, based on which set).</summary>
public sealed class IncrementalSetInfoTests : IDisposable
{
    private static readonly DateTime T0 = new(2026, 12, 5, 1, 0, 0, DateTimeKind.Utc);
    private readonly TempFolder _root = new();

    public void Dispose() => _root.Dispose();

    [Fact]
    public async Task A_set_shows_the_bytes_sent_how_it_was_stored_and_its_base_and_each_disk_its_own()
    {
        var store = new LocalBackupStore(_root.Path);
        await Sets.WriteV3Async(_root.Path, "vm1", T0);
        await Sets.WriteV3Async(_root.Path, "vm1", T0.AddDays(1), basedOn: "20261205-010000");
        await Sets.WriteV3Async(_root.Path, "vm1", T0.AddDays(2), basedOn: "20261206-010000", edit: m =>
        {
            // vda could not be based on the last set (resized): copied in full; vdb cloned where reflink was refused.
            (m.Disks[0].BasedOn, m.Disks[0].StoredAs, m.Disks[0].FullBecause, m.Disks[0].BytesSent, m.Disks[0].BytesCloned) =
                (null, "full", "the last Complete set 20261206-010000 holds vda at another size", 3 << 20, 0);
            (m.Disks[1].StoredAs, m.Disks[1].BytesCloned, m.Disks[1].BytesResent) = ("local copy", 65536, 16384);
        });
        await Sets.WriteAsync(store, _root.Path, "vm2", T0); // a set of an earlier version

        var sets = (await BackupCatalog.ListAsync(store, null, CancellationToken.None)).Sets;

        Assert.Equal(
            [("vm1", "OdaKvmBackup/3", 2L * 65536, "full", null), ("vm1", "OdaKvmBackup/3", 2L * 65536, "reflink", "20261205-010000"),
             ("vm1", "OdaKvmBackup/3", (3L << 20) + 65536, "mixed", "20261206-010000"), ("vm2", "OdaKvmBackup/2", (long?)null, (string?)null, (string?)null)],
            sets.Select(s => (s.DomainName, s.Format, s.BytesSent, s.StoredAs, s.BasedOn)));
        var last = sets[2];
        Assert.Equal(2 * Sets.DiskSize, last.BytesRead);
        Assert.Equal(
            [("vda", (string?)null, "full", "the last Complete set 20261206-010000 holds vda at another size", (long?)(3 << 20), (long?)0, (long?)0),
             ("vdb", "20261206-010000", "local copy", null, 65536, 65536, 16384)],
            last.Disks.Select(d => (d.Target, d.BasedOn, d.StoredAs, d.FullBecause, d.BytesSent, d.BytesCloned, d.BytesResent)));
        Assert.All(last.Disks, d => Assert.Equal(Sets.DiskSize, d.BytesRead));
        Assert.All(last.Disks, d => Assert.Matches("^[0-9a-f]{64}$", d.Digests!));
        Assert.All(sets[3].Disks, d => Assert.Null(d.Digests));
    }

    [Fact]
    public async Task Disks_based_on_different_sets_name_both()
    {
        var store = new LocalBackupStore(_root.Path);
        var folder = await Sets.WriteV3Async(_root.Path, "vm1", T0.AddDays(2), basedOn: "20261206-010000",
            edit: m => m.Disks[0].BasedOn = "20261205-010000");

        var set = (await BackupCatalog.LoadAsync(store, folder, CancellationToken.None))!;

        Assert.Equal(("reflink", "20261205-010000, 20261206-010000"), (set.StoredAs, set.BasedOn));
    }
}
