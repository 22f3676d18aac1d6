using System.Xml.Linq;
using OdaKvmBackup.Core.Tests.Support;
using OdaKvmBackup.WayBack.Tests.Support;

namespace OdaKvmBackup.WayBack.Tests;

[Collection(StateCollection.Name)]
public sealed class RestoreServiceTests : IDisposable
{
    private static readonly DateTime T0 = new(2026, 11, 20, 22, 0, 0, DateTimeKind.Utc);
    private readonly StateFolder _state = new();
    private readonly TempFolder _temp = new();
    private readonly FakeHost _host = new();
    private readonly string _backup;
    private readonly string _vms;
    private readonly string _dest;

    public RestoreServiceTests()
    {
        _backup = Directory.CreateDirectory(_temp.Combine("backup")).FullName;
        _vms = Directory.CreateDirectory(_temp.Combine("vms")).FullName;
        _dest = Directory.CreateDirectory(_temp.Combine("restore")).FullName;
    }

    public void Dispose()
    {
        _temp.Dispose();
        _state.Dispose();
    }

    private RestoreService Service => new(_host.Tools, _host.Runner, new RecordingSink());

    private async Task<(BackupSetInfo Set, LocalBackupStore Store)> SetAsync(BackupSetStatus status = BackupSetStatus.Complete)
    {
        var store = new LocalBackupStore(_backup);
        var set = await Sets.WriteAsync(store, _backup, "vm1", T0, status, sourceFolder: _vms);
        // The VM as it is defined now: file disks on the set's source paths, running.
        foreach (var disk in set.Disks)
            File.WriteAllText(disk.Source, "production " + disk.Target);
        _host.Add("vm1", FileDisks(Xmls.Domain("vm1", set.Disks[0].Source, set.Disks[1].Source)));
        return (set, store);
    }

    private static string FileDisks(string xml) => xml.Replace("type='block'", "type='file'", StringComparison.Ordinal).Replace("source dev=", "source file=", StringComparison.Ordinal);

    private static RestoreRequest ToFolder(string dest, string? newName = null, bool force = false, bool start = false) => new(dest, newName, start, false, force, false);

    [Fact]
    public async Task Only_a_Complete_set_is_restored()
    {
        var (set, store) = await SetAsync(BackupSetStatus.Incomplete);
        var ex = await Assert.ThrowsAsync<BackupException>(() => Service.PlanAsync(set, store, ToFolder(_dest), CancellationToken.None));
        Assert.Equal(ErrorIds.BackupSetNotComplete, ex.ErrorId);
    }

    [Fact]
    public async Task A_restore_under_a_new_name_defines_a_domain_on_verified_private_copies_and_starts_it_only_when_asked()
    {
        var (set, store) = await SetAsync();
        var plan = await Service.PlanAsync(set, store, ToFolder(_dest, "vm1-copy"), CancellationToken.None);
        var restored = await Service.ExecuteAsync(plan, store, CancellationToken.None);

        Assert.Equal(RestoreMode.NewDomain, restored.Mode);
        Assert.False(restored.Started);
        Assert.Equal("shut off", _host.Domains["vm1-copy"].State);
        var defined = DomainXml.Parse(_host.Domains["vm1-copy"].Xml);
        Assert.Equal([Path.Combine(_dest, "boot"), Path.Combine(_dest, "data")], defined.Disks.Select(d => d.Source));
        Assert.Null(XDocument.Parse(_host.Domains["vm1-copy"].Xml).Root!.Element("uuid"));
        // A definition rebuilt by the module: this host's emulator (domcapabilities), nothing of the set's metadata.
        Assert.Equal(FakeHost.HostEmulator, (string?)XDocument.Parse(_host.Domains["vm1-copy"].Xml).Root!.Element("devices")!.Element("emulator"));
        Assert.Contains(plan.LeftOut, l => l.StartsWith("<metadata>", StringComparison.Ordinal));
        foreach (var disk in restored.Disks)
        {
            Assert.True(disk.Verified);
            Assert.Equal(File.ReadAllBytes(set.Disks.Single(d => d.Target == disk.Target).Location), File.ReadAllBytes(disk.Path));
            Assert.Equal(PrivateFiles.FileMode, File.GetUnixFileMode(disk.Path));
            Assert.True(disk.AllocatedBytes < disk.SizeBytes / 2, "restored sparse");
        }
        Assert.Equal(PrivateFiles.FileMode, File.GetUnixFileMode(restored.DefinitionFile!));
        Assert.DoesNotContain(_host.CommandLines, c => c[0] == "virsh" && c[1] == "start");
        Assert.Empty(Directory.EnumerateFiles(_dest, "*.partial"));
        foreach (var disk in set.Disks)
            Assert.Equal("production " + disk.Target, File.ReadAllText(disk.Source)); // the source VM's files are untouched

        var dest2 = Directory.CreateDirectory(_temp.Combine("restore2")).FullName;
        var started = await Service.ExecuteAsync(await Service.PlanAsync(set, store, ToFolder(dest2, "vm1-copy2", start: true), CancellationToken.None), store, CancellationToken.None);
        Assert.True(started.Started);
        Assert.Equal("running", _host.Domains["vm1-copy2"].State);
    }

    [Fact]
    public async Task A_name_in_use_is_refused()
    {
        var (set, store) = await SetAsync();
        var ex = await Assert.ThrowsAsync<BackupException>(() => Service.PlanAsync(set, store, ToFolder(_dest, "vm1"), CancellationToken.None));
        Assert.Equal(ErrorIds.DomainExists, ex.ErrorId);
    }

    [Fact]
    public async Task A_folder_holding_a_disk_of_any_domain_is_refused_even_with_Force_and_nothing_is_written()
    {
        var (set, store) = await SetAsync();
        var prodFolder = Directory.CreateDirectory(_temp.Combine("other-vm")).FullName;
        File.WriteAllText(Path.Combine(prodFolder, "data"), "another VM's disk");
        _host.Add("other", FileDisks(Xmls.Domain("other", Path.Combine(prodFolder, "os"), Path.Combine(prodFolder, "data"))), "shut off");

        var ex = await Assert.ThrowsAsync<BackupException>(() => Service.PlanAsync(set, store, ToFolder(prodFolder, force: true), CancellationToken.None));

        Assert.Equal(ErrorIds.RestoreWouldUseProductionFile, ex.ErrorId);
        Assert.Equal("another VM's disk", File.ReadAllText(Path.Combine(prodFolder, "data")));
        Assert.Equal(["data"], Directory.EnumerateFiles(prodFolder).Select(Path.GetFileName));
    }

    [Fact]
    public async Task A_restore_target_that_is_a_link_to_a_production_disk_is_refused()
    {
        var (set, store) = await SetAsync();
        File.CreateSymbolicLink(Path.Combine(_dest, "boot"), set.Disks[0].Source);
        var ex = await Assert.ThrowsAsync<BackupException>(() => Service.PlanAsync(set, store, ToFolder(_dest, force: true), CancellationToken.None));
        Assert.Equal(ErrorIds.RestoreWouldUseProductionFile, ex.ErrorId);
    }

    [Fact]
    public async Task Files_already_there_are_replaced_only_with_Force_and_kept_aside()
    {
        var (set, store) = await SetAsync();
        File.WriteAllText(Path.Combine(_dest, "data"), "old");
        var ex = await Assert.ThrowsAsync<BackupException>(() => Service.PlanAsync(set, store, ToFolder(_dest), CancellationToken.None));
        Assert.Equal(ErrorIds.RestoreTargetExists, ex.ErrorId);
        var plan = await Service.PlanAsync(set, store, ToFolder(_dest, force: true), CancellationToken.None);
        Assert.Matches(@"vdb -> .*/data \(the file there now is kept as .*/data\.before-restore-\d{8}-\d{6}\)", plan.Describe());
        var result = await Service.ExecuteAsync(plan, store, CancellationToken.None);
        Assert.Equal(File.ReadAllBytes(set.Disks[1].Location), File.ReadAllBytes(Path.Combine(_dest, "data")));
        var kept = Assert.Single(result.KeptAside);
        Assert.Equal("old", File.ReadAllText(kept));
    }

    [Fact]
    public async Task A_copy_that_does_not_match_its_manifest_is_never_placed()
    {
        var (set, store) = await SetAsync();
        Sets.FlipByte(set.Disks[1].Location, (1 << 20) + 1);
        var plan = await Service.PlanAsync(set, store, ToFolder(_dest, "vm1-copy"), CancellationToken.None);
        var ex = await Assert.ThrowsAsync<BackupException>(() => Service.ExecuteAsync(plan, store, CancellationToken.None));
        Assert.Equal(ErrorIds.RestoreVerificationFailed, ex.ErrorId);
        Assert.Contains("vdb", ex.Message, StringComparison.Ordinal);
        Assert.False(_host.Domains.ContainsKey("vm1-copy"));
        Assert.False(File.Exists(Path.Combine(_dest, "data")));
        Assert.Empty(Directory.EnumerateFiles(_dest, "*.partial"));
    }

    private const string BackedByShadow = "{ \"format\": \"qcow2\", \"virtual-size\": 3145728, \"actual-size\": 200704, \"backing-filename\": \"/etc/shadow\", \"full-backing-filename\": \"/etc/shadow\" }";

    [Fact]
    public async Task A_restored_copy_whose_qcow2_names_a_backing_file_is_inspected_before_it_takes_its_name_and_nothing_is_defined()
    {
        var (set, store) = await SetAsync();
        _host.ImageInfos["boot"] = BackedByShadow;
        var plan = await Service.PlanAsync(set, store, ToFolder(_dest, "vm1-copy"), CancellationToken.None);
        var ex = await Assert.ThrowsAsync<BackupException>(() => Service.ExecuteAsync(plan, store, CancellationToken.None));
        Assert.Equal("BackupCopyUnsafe", ex.ErrorId);
        Assert.Contains("/etc/shadow", ex.Message, StringComparison.Ordinal);
        Assert.Contains("vda", ex.Message, StringComparison.Ordinal);
        Assert.False(_host.Domains.ContainsKey("vm1-copy"));
        Assert.Empty(Directory.EnumerateFileSystemEntries(_dest));
        var info = Assert.Single(_host.CommandLines, c => c[0] == "qemu-img" && c[1] == "info" && c[^1].Contains("/boot", StringComparison.Ordinal));
        Assert.Equal(["qemu-img", "info", "--output=json", "-f", "qcow2"], info[..5]);
        Assert.DoesNotContain("-U", info);
    }

    [Fact]
    public async Task An_in_place_restore_inspects_the_copies_before_they_replace_the_VMs_disks()
    {
        var (set, store) = await SetAsync();
        _host.Domains["vm1"].State = "shut off";
        _host.ImageInfos["boot"] = BackedByShadow;
        var plan = await Service.PlanAsync(set, store, new RestoreRequest(null, null, false, false, true, true), CancellationToken.None);
        var ex = await Assert.ThrowsAsync<BackupException>(() => Service.ExecuteAsync(plan, store, CancellationToken.None));
        Assert.Equal("BackupCopyUnsafe", ex.ErrorId);
        foreach (var disk in set.Disks)
            Assert.Equal("production " + disk.Target, File.ReadAllText(disk.Source));
        Assert.Equal(["boot", "data"], Directory.EnumerateFiles(_vms).Select(Path.GetFileName).Order());
    }

    [Fact]
    public async Task A_copy_larger_than_its_manifest_says_is_refused_before_anything_is_written()
    {
        var (set, store) = await SetAsync();
        await using (var grown = File.OpenWrite(set.Disks[1].Location))
            grown.SetLength(Sets.DiskSize + (1 << 20));

        var ex = await Assert.ThrowsAsync<BackupException>(() => Service.PlanAsync(set, store, ToFolder(_dest, force: true), CancellationToken.None));

        Assert.Equal(ErrorIds.BackupCopyDamaged, ex.ErrorId);
        Assert.Contains("vdb", ex.Message, StringComparison.Ordinal);
        Assert.Contains($"{Sets.DiskSize + (1 << 20)} bytes", ex.Message, StringComparison.Ordinal);
        Assert.Contains($"backup.json says {Sets.DiskSize}", ex.Message, StringComparison.Ordinal);
        Assert.Empty(Directory.EnumerateFileSystemEntries(_dest));
    }

    [Fact]
    public async Task A_missing_copy_is_refused_before_anything_is_written()
    {
        var (set, store) = await SetAsync();
        File.Delete(set.Disks[0].Location);

        var ex = await Assert.ThrowsAsync<BackupException>(() => Service.PlanAsync(set, store, ToFolder(_dest), CancellationToken.None));

        Assert.Equal(ErrorIds.BackupCopyMissing, ex.ErrorId);
        Assert.Contains("vda", ex.Message, StringComparison.Ordinal);
        Assert.Empty(Directory.EnumerateFileSystemEntries(_dest));
    }

    [Fact]
    public async Task In_place_needs_Force_and_a_shut_off_VM()
    {
        var (set, store) = await SetAsync();
        var noForce = await Assert.ThrowsAsync<BackupException>(() => Service.PlanAsync(set, store, new RestoreRequest(null, null, false, false, false, true), CancellationToken.None));
        Assert.Equal(ErrorIds.InPlaceNeedsForce, noForce.ErrorId);
        var running = await Assert.ThrowsAsync<BackupException>(() => Service.PlanAsync(set, store, new RestoreRequest(null, null, false, false, true, true), CancellationToken.None));
        Assert.Equal(ErrorIds.DomainNotShutOff, running.ErrorId);
        foreach (var disk in set.Disks)
            Assert.Equal("production " + disk.Target, File.ReadAllText(disk.Source));
    }

    [Fact]
    public async Task In_place_on_a_shut_off_VM_puts_the_disks_back_and_keeps_the_replaced_files_aside()
    {
        var (set, store) = await SetAsync();
        _host.Domains["vm1"].State = "shut off";
        File.SetUnixFileMode(set.Disks[0].Source, UnixFileMode.UserRead | UnixFileMode.UserWrite | UnixFileMode.GroupRead);
        var plan = await Service.PlanAsync(set, store, new RestoreRequest(null, null, false, true, true, true), CancellationToken.None);
        var restored = await Service.ExecuteAsync(plan, store, CancellationToken.None);

        Assert.Equal(RestoreMode.InPlace, restored.Mode);
        Assert.Equal(2, restored.KeptAside.Count);
        foreach (var disk in set.Disks)
        {
            Assert.Equal(File.ReadAllBytes(disk.Location), File.ReadAllBytes(disk.Source));
            var kept = restored.KeptAside.Single(k => Path.GetFileName(k).StartsWith(Path.GetFileName(disk.Source) + ".before-restore-", StringComparison.Ordinal));
            Assert.Equal("production " + disk.Target, File.ReadAllText(kept));
        }
        Assert.Equal(UnixFileMode.UserRead | UnixFileMode.UserWrite | UnixFileMode.GroupRead, File.GetUnixFileMode(set.Disks[0].Source));
        Assert.True(HostPaths.AllocatedBytes(set.Disks[1].Source) >= Sets.DiskSize, "-FullyAllocated allocates the raw disk");
        Assert.DoesNotContain(_host.CommandLines, c => c[0] == "virsh" && c[1] is "define" or "start");
    }

    [Fact]
    public async Task In_place_refuses_a_VM_whose_disks_are_no_longer_those_of_the_set()
    {
        var (set, store) = await SetAsync();
        _host.Domains["vm1"] = new FakeDomain { Xml = FileDisks(Xmls.Domain("vm1", set.Disks[0].Source, Path.Combine(_vms, "new-data"))), State = "shut off" };
        var ex = await Assert.ThrowsAsync<BackupException>(() => Service.PlanAsync(set, store, new RestoreRequest(null, null, false, false, true, true), CancellationToken.None));
        Assert.Equal(ErrorIds.RestoreTargetMismatch, ex.ErrorId);
        Assert.Contains("vdb", ex.Message, StringComparison.Ordinal);
    }

    [Fact]
    public async Task A_set_on_a_remote_store_is_streamed_back_and_written_sparse()
    {
        var remote = new FakeRemoteStore(_backup);
        var set = await Sets.WriteAsync(remote, _backup, "vm1", T0, sourceFolder: _vms);
        var plan = await Service.PlanAsync(set, remote, ToFolder(_dest), CancellationToken.None);
        var restored = await Service.ExecuteAsync(plan, remote, CancellationToken.None);
        Assert.Equal(2, remote.OpenReadCalls);
        Assert.All(restored.Disks, d => Assert.True(d.AllocatedBytes < d.SizeBytes / 2));
        Assert.Equal(File.ReadAllBytes(Path.Combine(_backup, "vm1", set.RunId, "data")), File.ReadAllBytes(Path.Combine(_dest, "data")));
    }

    // ------------------------------------------------------------ sets of format OdaKvmBackup/3 (issue 15)

    private async Task<(BackupSetInfo Set, IBackupStore Store)> V3SetAsync(IBackupStore store)
    {
        var folder = await Sets.WriteV3Async(_backup, "vm1", T0, basedOn: "20261119-220000", sourceFolder: _vms);
        var set = (await BackupCatalog.LoadAsync(store, folder, CancellationToken.None))!;
        foreach (var disk in set.Disks)
            File.WriteAllText(disk.Source, "production " + disk.Target);
        _host.Add("vm1", FileDisks(Xmls.Domain("vm1", set.Disks[0].Source, set.Disks[1].Source)));
        return (set, store);
    }

    [Fact]
    public async Task A_set_based_on_another_restores_alone_even_without_its_list_files_and_is_checked_by_its_digest_list()
    {
        var (set, store) = await V3SetAsync(new LocalBackupStore(_backup));
        // Every set stands alone: the set it was based on is not there, and restoring needs only the manifest's hash.
        foreach (var list in Directory.GetFiles(_backup, "*.digests", SearchOption.AllDirectories))
            File.Delete(list);

        var plan = await Service.PlanAsync(set, store, ToFolder(_dest), CancellationToken.None);
        var restored = await Service.ExecuteAsync(plan, store, CancellationToken.None);

        Assert.Equal(["20261120-220000"], Directory.GetDirectories(_temp.Combine("backup", "vm1")).Select(Path.GetFileName));
        foreach (var disk in restored.Disks)
        {
            var inSet = set.Manifest.Disks.Single(d => d.Target == disk.Target);
            Assert.True(disk.Verified);
            Assert.Null(disk.ContentDigest);
            Assert.Equal(inSet.Digests, disk.Digests);
            Assert.Equal(File.ReadAllBytes(set.Disks.Single(d => d.Target == disk.Target).Location), File.ReadAllBytes(disk.Path));
            Assert.Equal(inSet.Digests, (await SparseCopy.DigestListAsync(disk.Path, null, CancellationToken.None)).Sha256);
        }
    }

    [Fact]
    public async Task A_copy_of_a_digest_list_set_that_does_not_match_its_manifest_is_never_placed()
    {
        var (set, store) = await V3SetAsync(new LocalBackupStore(_backup));
        Sets.FlipByte(set.Disks[1].Location, (1 << 20) + 1);

        var plan = await Service.PlanAsync(set, store, ToFolder(_dest, "vm1-copy"), CancellationToken.None);
        var ex = await Assert.ThrowsAsync<BackupException>(() => Service.ExecuteAsync(plan, store, CancellationToken.None));

        Assert.Equal(ErrorIds.RestoreVerificationFailed, ex.ErrorId);
        Assert.Contains("The restore of vdb from the set vm1 20261120-220000 failed its check", ex.Message, StringComparison.Ordinal);
        Assert.Contains("reads as the digest list", ex.Message, StringComparison.Ordinal);
        Assert.False(_host.Domains.ContainsKey("vm1-copy"));
        Assert.False(File.Exists(Path.Combine(_dest, "data")));
        Assert.Empty(Directory.EnumerateFiles(_dest, "*.partial"));
    }

    [Fact]
    public async Task A_digest_list_set_on_a_remote_store_is_streamed_back_and_checked_by_its_digest_list()
    {
        var remote = new FakeRemoteStore(_backup);
        var (set, _) = await V3SetAsync(remote);

        var plan = await Service.PlanAsync(set, remote, ToFolder(_dest), CancellationToken.None);
        var restored = await Service.ExecuteAsync(plan, remote, CancellationToken.None);

        Assert.Equal([set.SetFolder + "/boot", set.SetFolder + "/data"], remote.Opened);
        Assert.Equal(set.Manifest.Disks.Select(d => d.Digests), restored.Disks.Select(d => d.Digests));
        Assert.Equal(File.ReadAllBytes(Path.Combine(_backup, "vm1", set.RunId, "data")), File.ReadAllBytes(Path.Combine(_dest, "data")));
    }
}
