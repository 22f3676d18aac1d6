using OdaKvmBackup.Core.Tests.Support;

namespace OdaKvmBackup.Core.Tests;

/// <summary>Step 6 on real files: an overlay is moved only once no domain uses it, never over another file, and
/// lands private in a private folder.</summary>
public sealed class RetentionServiceTests : IDisposable
{
    private const string Domain = "oda_vm1";
    private const string Snap = BackupNames.DefaultSnapshotName;
    private const string Run = "oda_vm1/20261128-101500";
    private readonly TempFolder _temp = new("retention-tests");
    private readonly FakeHost _host = new(Domain);
    private readonly string _boot;
    private readonly string _overlay;
    private readonly string _retention;

    public RetentionServiceTests()
    {
        _boot = Path.Combine(_temp.Folder("vm_oda_vm1"), "oda_vm1_boot");
        _overlay = _boot + "." + Snap;
        _retention = _temp.Folder("retencao");
        File.WriteAllText(_boot, "disk");
        File.WriteAllText(_overlay, "what the guest wrote during the backup");
        File.SetUnixFileMode(_overlay, (UnixFileMode)0b110_100_100); // as QEMU made it: 0644
        _host.UseDisks(new TestDisk("vda", _boot, "raw")); // committed back: the overlay is in no chain
    }

    public void Dispose() => _temp.Dispose();

    private RetentionService Service => new(_host.Virsh);

    private string Target => Path.Combine(_retention, "oda_vm1", "20261128-101500", "oda_vm1_boot." + Snap);

    [Fact]
    public async Task Overlay_no_domain_uses_is_moved_private_into_a_private_folder()
    {
        string moved;
        using (Umask.Set(0))
            moved = await Service.MoveAsync(Domain, _overlay, _retention, Run, "oda_vm1_boot." + Snap, CancellationToken.None);

        Assert.Equal(Target, moved);
        Assert.False(File.Exists(_overlay));
        Assert.Equal("what the guest wrote during the backup", File.ReadAllText(moved));
        Assert.Equal(PrivateFiles.FileMode, File.GetUnixFileMode(moved));
        Assert.Equal(PrivateFiles.FolderMode, File.GetUnixFileMode(Path.GetDirectoryName(moved)!));
        Assert.Equal(PrivateFiles.FolderMode, File.GetUnixFileMode(Path.Combine(_retention, "oda_vm1")));
    }

    [Fact]
    public async Task Overlay_still_in_its_own_domains_chain_is_OverlayInUse_and_not_moved()
    {
        _host.UseDisks(new TestDisk("vda", _overlay) { Backing = _boot, BackingFormat = "raw" });

        var ex = await Assert.ThrowsAsync<BackupException>(() => Service.MoveAsync(Domain, _overlay, _retention, Run, "x", CancellationToken.None));

        Assert.Equal(ErrorIds.OverlayInUse, ex.ErrorId);
        Assert.Contains("vda", ex.Message, StringComparison.Ordinal);
        AssertNotMoved();
    }

    [Fact]
    public async Task Overlay_in_another_domains_chain_is_OverlayInUse_and_not_moved()
    {
        _host.OtherDomains["clone1"] = TestDomain.Xml("clone1", [new TestDisk("vda", "/x/clone1.qcow2") { Backing = _overlay, BackingFormat = "qcow2" }]);

        var ex = await Assert.ThrowsAsync<BackupException>(() => Service.MoveAsync(Domain, _overlay, _retention, Run, "x", CancellationToken.None));

        Assert.Equal(ErrorIds.OverlayInUse, ex.ErrorId);
        Assert.Contains("clone1", ex.Message, StringComparison.Ordinal);
        AssertNotMoved();
    }

    [Fact]
    public async Task A_domain_renamed_while_the_chains_are_read_is_read_again_under_its_new_name()
    {
        // The first listing still has the old name; by the time its definition is read, it is called clone1.
        var listings = 0;
        _host.OnList = call => Interlocked.Increment(ref listings) <= 2
            ? Results.Ok($"{Domain}\nold_name\n\n")
            : null;
        _host.OtherDomains["clone1"] = TestDomain.Xml("clone1", [new TestDisk("vda", "/x/clone1.qcow2") { Backing = _overlay, BackingFormat = "qcow2" }]);

        var ex = await Assert.ThrowsAsync<BackupException>(() => Service.MoveAsync(Domain, _overlay, _retention, Run, "x", CancellationToken.None));

        Assert.Equal(ErrorIds.OverlayInUse, ex.ErrorId);
        Assert.Contains("clone1", ex.Message, StringComparison.Ordinal);
        Assert.True(listings > 2, "the listing was read again");
        AssertNotMoved();
    }

    [Fact]
    public async Task Overlay_another_domain_used_when_the_batch_started_is_not_moved()
    {
        var others = new HashSet<string>(StringComparer.Ordinal) { _overlay };

        var ex = await Assert.ThrowsAsync<BackupException>(() => Service.MoveAsync(Domain, _overlay, _retention, Run, "x", CancellationToken.None, others));

        Assert.Equal(ErrorIds.OverlayInUse, ex.ErrorId);
        AssertNotMoved();
    }

    [Fact]
    public async Task Chains_of_other_domains_are_read_once_with_every_file_in_them()
    {
        _host.OtherDomains["clone1"] = TestDomain.Xml("clone1", [new TestDisk("vda", "/x/clone1.qcow2") { Backing = "/x/template.qcow2", BackingFormat = "qcow2" }]);

        var files = await Service.FilesInChainsOfOtherDomainsAsync(Domain, CancellationToken.None);

        Assert.Equal(["/x/clone1.qcow2", "/x/template.qcow2"], files.Order(StringComparer.Ordinal));
    }

    [Fact]
    public async Task Overlay_whose_retained_name_is_taken_is_RetainedOverlayExists_and_nothing_moves()
    {
        Directory.CreateDirectory(Path.GetDirectoryName(Target)!);
        File.WriteAllText(Target, "an older overlay");

        var ex = await Assert.ThrowsAsync<BackupException>(() => Service.MoveAsync(Domain, _overlay, _retention, Run, "oda_vm1_boot." + Snap, CancellationToken.None));

        Assert.Equal(ErrorIds.RetainedOverlayExists, ex.ErrorId);
        Assert.Contains(Target, ex.Message, StringComparison.Ordinal);
        Assert.Equal("an older overlay", File.ReadAllText(Target));
        Assert.Equal("what the guest wrote during the backup", File.ReadAllText(_overlay));
    }

    [Fact]
    public async Task Discard_deletes_an_overlay_no_domain_uses_and_never_one_in_a_chain()
    {
        var other = _overlay + ".2";
        File.WriteAllText(other, "x");
        _host.OtherDomains["clone1"] = TestDomain.Xml("clone1", [new TestDisk("vda", "/x/clone1.qcow2") { Backing = other, BackingFormat = "qcow2" }]);

        await Service.DiscardAsync(_overlay, CancellationToken.None);
        var ex = await Assert.ThrowsAsync<BackupException>(() => Service.DiscardAsync(other, CancellationToken.None));

        Assert.False(File.Exists(_overlay));
        Assert.Equal(ErrorIds.OverlayInUse, ex.ErrorId);
        Assert.True(File.Exists(other));
    }

    [Fact]
    public async Task Retention_folder_that_is_a_disk_folder_is_refused_by_the_preflight()
    {
        var context = new PreflightContext(_host.QemuImg)
        {
            DomainName = Domain, RunId = "20261128-101500", Cold = false,
            Live = Host.DomainXml.Parse(_host.LiveXml),
            Disks = [new DiskRecord { Target = "vda", Source = _boot, Format = "raw", SetFile = "oda_vm1_boot" }],
        };

        await new RetentionCheck(Path.GetDirectoryName(_boot)! + "/").CheckAsync(context, CancellationToken.None);
        await new RetentionCheck(_retention).CheckAsync(context, CancellationToken.None);

        Assert.Equal([ErrorIds.RetentionIsDiskFolder], context.Problems.Select(p => p.ErrorId));
    }

    private void AssertNotMoved()
    {
        Assert.True(File.Exists(_overlay));
        Assert.Equal("what the guest wrote during the backup", File.ReadAllText(_overlay));
        Assert.Empty(Directory.EnumerateFileSystemEntries(_retention));
    }
}
