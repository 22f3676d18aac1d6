using OdaKvmBackup.Core.Backup;
using OdaKvmBackup.Core.Libvirt;
using OdaKvmBackup.Core.Safety;
using OdaKvmBackup.Core.Tests.Support;

namespace OdaKvmBackup.Core.Tests;

/// <summary>The preflight, against a fake virsh/qemu-img, with the disks in a temp folder so the file-system
/// checks (overlay folder, leftover overlay, free space) look at real folders.</summary>
[Collection(StateDirectoryCollection.Name)]
public sealed class SnapshotServicePlanTests : IDisposable
{
    private const string Domain = "oda_vm1";
    private const string Snap = OverlayNaming.DefaultSnapshotName;
    private readonly TempFolder _temp = new("plan-tests");
    private readonly FakeHost _host = new(Domain);
    private readonly string _bootFolder;
    private readonly string _boot;
    private readonly string _data;

    public SnapshotServicePlanTests(StateDirectoryFixture state)
    {
        state.Reset();
        _bootFolder = _temp.Folder("vm_oda_vm1");
        _boot = Path.Combine(_bootFolder, "oda_vm1_boot");
        _data = Path.Combine(_temp.Folder("vdisk_data1"), "data1");
        UseDisks(new TestDisk("vda", _boot, "raw"), new TestDisk("vdb", _data, "raw"));
    }

    public void Dispose() => _temp.Dispose();

    /// <summary>Creates the disks' files, their qemu-img info, and the live/inactive XML.</summary>
    private void UseDisks(params TestDisk[] disks) => UseDisks("connected", disks);

    private void UseDisks(string? agentState, params TestDisk[] disks)
    {
        foreach (var disk in disks)
        {
            foreach (var file in new[] { disk.Source, disk.Backing }.OfType<string>())
            {
                if (disk.Type == "file" && !File.Exists(file))
                    File.WriteAllText(file, "image");
                _host.ImageInfo[file] = TestDomain.ImageInfoJson(file, "raw", 64L << 20, 1L << 20);
            }
        }
        _host.LiveXml = TestDomain.Xml(Domain, disks, agentState, live: true);
        _host.InactiveXml = TestDomain.Xml(Domain, disks, agentState, live: false);
    }

    private SnapshotService Service => new(_host.Virsh, _host.QemuImg);

    private SnapshotRequest Request(DownstreamPlan? downstream = null, bool crashConsistent = false, string? overlayDirectory = null, params string[] targets)
    {
        var disks = DomainXml.Parse(_host.LiveXml, _host.State).Disks.Where(d => targets.Length == 0 || targets.Contains(d.Target)).ToList();
        return new SnapshotRequest(Domain, disks, Snap, overlayDirectory, crashConsistent, downstream ?? DownstreamPlan.None);
    }

    private Task<SnapshotPlan> Plan(SnapshotRequest? request = null) => Service.PlanAsync(request ?? Request(), CancellationToken.None);

    private static List<string> Ids(SnapshotPlan plan) => plan.Problems.Select(p => p.ErrorId).ToList();

    private void AssertReadOnly() =>
        Assert.All(_host.Calls, c => Assert.Contains(c.Command, new[] { "domstate", "dumpxml", "snapshot-list", "blockjob", "qemu-agent-command", "info" }));

    [Fact]
    public async Task Clean_running_domain_gets_a_plan_with_an_overlay_beside_each_disk_and_no_problem()
    {
        var plan = await Plan();

        Assert.Empty(Ids(plan));
        Assert.False(plan.Cold);
        Assert.Equal(Domain, plan.DomainName);
        Assert.Matches(@"^\d{8}-\d{6}$", plan.RunId);
        Assert.Equal(["vda", "vdb"], plan.Disks.Select(d => d.Target));
        Assert.Equal([_boot + ".FILE_STAGE_BACKUP.TEMP", Path.Combine(Path.GetDirectoryName(_data)!, "data1.FILE_STAGE_BACKUP.TEMP")],
            plan.Disks.Select(d => d.Overlay));
        Assert.Equal([_boot, _data], plan.Disks.Select(d => d.Source));
        Assert.Equal(["raw", "raw"], plan.Disks.Select(d => d.Format));
        Assert.Empty(plan.ExcludedTargets);
        Assert.Equal(_host.InactiveXml, plan.InactiveXml);
        Assert.Contains(_host.Calls, c => c.Command == "qemu-agent-command");
        AssertReadOnly();
    }

    [Fact]
    public async Task Disks_not_piped_are_excluded_from_the_snapshot()
    {
        var plan = await Plan(Request(targets: "vda"));

        Assert.Empty(Ids(plan));
        Assert.Equal(["vda"], plan.Disks.Select(d => d.Target));
        Assert.Equal(["vdb"], plan.ExcludedTargets);
    }

    [Fact]
    public async Task Overlay_directory_puts_every_overlay_there_named_after_the_domain()
    {
        var overlays = _temp.Folder("overlays");

        var plan = await Plan(Request(overlayDirectory: overlays));

        Assert.Empty(Ids(plan));
        Assert.Equal([Path.Combine(overlays, "oda_vm1.oda_vm1_boot.FILE_STAGE_BACKUP.TEMP"), Path.Combine(overlays, "oda_vm1.data1.FILE_STAGE_BACKUP.TEMP")],
            plan.Disks.Select(d => d.Overlay));
    }

    [Fact]
    public async Task Disk_still_on_our_overlay_asks_for_Repair_KvmBackup()
    {
        var overlay = _boot + ".FILE_STAGE_BACKUP.TEMP";
        UseDisks(new TestDisk("vda", overlay) { Backing = _boot, BackingFormat = "raw" }, new TestDisk("vdb", _data, "raw"));

        var plan = await Plan();

        var problem = Assert.Single(plan.Problems);
        Assert.Equal(ErrorIds.DiskAlreadyOnOverlay, problem.ErrorId);
        Assert.Equal(BackupErrorCategory.InvalidOperation, problem.Category);
        Assert.Contains(overlay, problem.Message, StringComparison.Ordinal);
        Assert.Contains($"Repair-KvmBackup -DomainName {Domain}", problem.FullMessage, StringComparison.Ordinal);
        Assert.Equal(Domain, problem.Target);
    }

    [Fact]
    public async Task Disk_on_a_backing_chain_we_did_not_make_is_refused()
    {
        var template = _temp.Combine("ol8-template.qcow2");
        UseDisks(new TestDisk("vda", _boot) { Backing = template, BackingFormat = "qcow2" }, new TestDisk("vdb", _data, "raw"));

        var plan = await Plan();

        var problem = Assert.Single(plan.Problems);
        Assert.Equal(ErrorIds.DiskHasForeignBackingChain, problem.ErrorId);
        Assert.Contains(template, problem.Message, StringComparison.Ordinal);
    }

    [Fact]
    public async Task Leftover_snapshot_metadata_is_reported()
    {
        _host.Snapshots.Add("older");
        _host.Snapshots.Add(Snap);

        var plan = await Plan();

        var problem = Assert.Single(plan.Problems);
        Assert.Equal(ErrorIds.LeftoverSnapshotMetadata, problem.ErrorId);
        Assert.Equal(BackupErrorCategory.ResourceExists, problem.Category);
        Assert.Contains(Snap, problem.Message, StringComparison.Ordinal);
        Assert.Contains("Repair-KvmBackup", problem.FullMessage, StringComparison.Ordinal);
    }

    [Fact]
    public async Task Other_snapshot_names_are_no_problem()
    {
        _host.Snapshots.Add("before-upgrade");

        Assert.Empty(Ids(await Plan()));
    }

    [Fact]
    public async Task Active_block_job_is_reported_with_its_type_and_progress()
    {
        _host.BlockJobs["vdb"] = FakeHost.RunningJob;

        var plan = await Plan();

        var problem = Assert.Single(plan.Problems);
        Assert.Equal(ErrorIds.ActiveBlockJob, problem.ErrorId);
        Assert.Equal(BackupErrorCategory.ResourceBusy, problem.Category);
        Assert.Contains("vdb", problem.Message, StringComparison.Ordinal);
        Assert.Contains("Active Block Commit, 50 %", problem.Message, StringComparison.Ordinal);
    }

    [Fact]
    public async Task Agent_not_connected_is_reported()
    {
        _host.AgentPing = Results.VirshError(VirshErrorsTests.AgentNotConnected);

        var plan = await Plan();

        var problem = Assert.Single(plan.Problems);
        Assert.Equal(ErrorIds.AgentNotConnected, problem.ErrorId);
        Assert.Contains("-CrashConsistent", problem.FullMessage, StringComparison.Ordinal);
    }

    [Fact]
    public async Task Agent_not_configured_is_reported()
    {
        UseDisks(agentState: null, new TestDisk("vda", _boot, "raw"), new TestDisk("vdb", _data, "raw"));
        _host.AgentPing = Results.VirshError(VirshErrorsTests.NoAgentChannel);

        var plan = await Plan();

        Assert.Equal([ErrorIds.AgentNotConfigured], Ids(plan));
    }

    [Fact]
    public async Task Crash_consistent_backup_does_not_need_the_agent()
    {
        _host.AgentPing = Results.VirshError(VirshErrorsTests.AgentNotConnected);

        var plan = await Plan(Request(crashConsistent: true));

        Assert.Empty(Ids(plan));
        Assert.DoesNotContain(_host.Calls, c => c.Command == "qemu-agent-command");
    }

    [Theory]
    [InlineData("shut off")]
    [InlineData("crashed")]
    public async Task Shut_off_domain_gets_a_cold_plan_without_overlays(string state)
    {
        _host.State = state;
        _host.AgentPing = Results.VirshError(VirshErrorsTests.AgentNotConnected);
        _host.Snapshots.Add(Snap);

        var plan = await Plan();

        Assert.True(plan.Cold);
        Assert.Empty(Ids(plan));
        Assert.Equal(["vda", "vdb"], plan.Disks.Select(d => d.Target));
        Assert.All(plan.Disks, d => Assert.Null(d.Overlay));
        Assert.DoesNotContain(_host.Calls, c => c.Command is "qemu-agent-command" or "blockjob" or "snapshot-list");
        AssertReadOnly();
    }

    [Fact]
    public async Task Two_disks_whose_files_differ_only_in_extension_would_share_an_overlay()
    {
        var a = Path.Combine(_bootFolder, "disk a.qcow2");
        var b = Path.Combine(_bootFolder, "disk a.raw");
        UseDisks(new TestDisk("vda", a), new TestDisk("vdb", b, "raw"));

        var plan = await Plan();

        var problem = Assert.Single(plan.Problems);
        Assert.Equal(ErrorIds.OverlayCollision, problem.ErrorId);
        Assert.Contains("vda and vdb", problem.Message, StringComparison.Ordinal);
        Assert.Contains(Path.Combine(_bootFolder, "disk a.FILE_STAGE_BACKUP.TEMP"), problem.Message, StringComparison.Ordinal);
        Assert.Contains("-OverlayDirectory", problem.FullMessage, StringComparison.Ordinal);
    }

    [Fact]
    public async Task Leftover_overlay_file_is_reported()
    {
        File.WriteAllText(_boot + ".FILE_STAGE_BACKUP.TEMP", "leftover");

        var plan = await Plan();

        var problem = Assert.Single(plan.Problems);
        Assert.Equal(ErrorIds.LeftoverOverlayFile, problem.ErrorId);
        Assert.Contains(_boot + ".FILE_STAGE_BACKUP.TEMP", problem.Message, StringComparison.Ordinal);
    }

    [Fact]
    public async Task Missing_overlay_directory_is_reported()
    {
        var plan = await Plan(Request(overlayDirectory: _temp.Combine("no-such-folder")));

        Assert.Contains(ErrorIds.PathNotFound, Ids(plan));
        Assert.All(plan.Problems, p => Assert.Equal(ErrorIds.PathNotFound, p.ErrorId));
    }

    [Fact]
    public async Task Block_disk_needs_an_overlay_directory()
    {
        UseDisks(new TestDisk("vda", _boot, "raw"), new TestDisk("vdc", "/dev/mapper/vg_data-lv_oda_vm1", "raw", "block"));
        _host.ImageInfo["/dev/mapper/vg_data-lv_oda_vm1"] = TestDomain.ImageInfoJson("/dev/mapper/vg_data-lv_oda_vm1", "raw", 64L << 20, 0);

        var plan = await Plan(Request(targets: ["vda", "vdc"]));

        var problem = Assert.Single(plan.Problems, p => p.ErrorId == ErrorIds.UnsupportedDisk);
        Assert.Contains("-OverlayDirectory", problem.FullMessage, StringComparison.Ordinal);
    }

    [Fact]
    public async Task Destination_inside_a_disk_folder_is_refused()
    {
        var destination = _temp.Folder("vm_oda_vm1", "backups");

        var plan = await Plan(Request(new DownstreamPlan(destination, false, null)));

        var problem = Assert.Single(plan.Problems);
        Assert.Equal(ErrorIds.DestinationInsideDiskFolder, problem.ErrorId);
        Assert.Equal(BackupErrorCategory.InvalidArgument, problem.Category);
        Assert.Contains(_bootFolder, problem.Message, StringComparison.Ordinal);
    }

    [Fact]
    public async Task Destination_that_is_a_disk_folder_is_refused()
    {
        var plan = await Plan(Request(new DownstreamPlan(_bootFolder + "/", false, null)));

        Assert.Equal([ErrorIds.DestinationInsideDiskFolder], Ids(plan));
    }

    [Fact]
    public async Task Destination_beside_the_disk_folders_is_fine()
    {
        var destination = _temp.Folder("vm_oda_vm1-backups");

        var plan = await Plan(Request(new DownstreamPlan(destination, false, null)));

        Assert.Empty(Ids(plan));
    }

    [Fact]
    public async Task Not_enough_free_space_for_the_overlays_is_reported()
    {
        // A 1 PiB disk asks for a tenth of itself beside it: more than any test machine has.
        _host.ImageInfo[_boot] = TestDomain.ImageInfoJson(_boot, "raw", 1L << 50, 1L << 20);

        var plan = await Plan();

        var problem = Assert.Single(plan.Problems);
        Assert.Equal(ErrorIds.NotEnoughSpaceForOverlays, problem.ErrorId);
        Assert.Contains(_bootFolder, problem.Message, StringComparison.Ordinal);
        Assert.Contains("-OverlayDirectory", problem.FullMessage, StringComparison.Ordinal);
    }

    [Fact]
    public async Task Not_enough_free_space_at_the_destination_is_reported()
    {
        var destination = _temp.Folder("backups");
        // The destination check counts the data qemu-img reports (actual-size); the overlay check the virtual size.
        _host.ImageInfo[_data] = TestDomain.ImageInfoJson(_data, "raw", 64L << 20, 1L << 50);

        var plan = await Plan(Request(new DownstreamPlan(destination, false, null)));

        var problem = Assert.Single(plan.Problems);
        Assert.Equal(ErrorIds.NotEnoughSpaceAtDestination, problem.ErrorId);
        Assert.Contains(destination, problem.Message, StringComparison.Ordinal);
    }

    [Fact]
    public async Task Retention_in_a_disk_folder_is_refused()
    {
        var plan = await Plan(Request(new DownstreamPlan(null, false, _bootFolder)));

        Assert.Equal([ErrorIds.RetentionIsDiskFolder], Ids(plan));
    }

    [Fact]
    public async Task Unfinished_run_in_the_journal_asks_for_Repair_KvmBackup()
    {
        Journal.Save(new JournalEntry
        {
            DomainName = Domain,
            RunId = "20250101-020304",
            SnapshotName = Snap,
            Consistency = BackupConsistency.Quiesced,
            Phase = JournalPhase.OnOverlays,
            Disks = [new JournalDisk { Target = "vda", Source = _boot, Format = "raw", Overlay = _boot + "." + Snap }],
        });

        var plan = await Plan();

        var problem = Assert.Single(plan.Problems);
        Assert.Equal(ErrorIds.UnfinishedBackup, problem.ErrorId);
        Assert.Contains("20250101-020304", problem.Message, StringComparison.Ordinal);
        Assert.Contains($"Repair-KvmBackup -DomainName {Domain}", problem.FullMessage, StringComparison.Ordinal);
    }

    [Fact]
    public async Task Backup_running_in_another_pipeline_is_reported_as_in_progress()
    {
        using var held = DomainLock.TryAcquire(Domain);
        Assert.NotNull(held);

        var plan = await Plan();

        var problem = Assert.Single(plan.Problems);
        Assert.Equal(ErrorIds.BackupInProgress, problem.ErrorId);
        Assert.Equal(BackupErrorCategory.ResourceBusy, problem.Category);
    }

    [Fact]
    public async Task Preflight_leaves_the_domain_lock_free()
    {
        await Plan();

        using var again = DomainLock.TryAcquire(Domain);
        Assert.NotNull(again);
    }

    [Fact]
    public async Task Disk_that_changed_since_it_was_listed_is_reported()
    {
        var request = Request();
        UseDisks(new TestDisk("vda", Path.Combine(_bootFolder, "other_boot"), "raw"), new TestDisk("vdb", _data, "raw"));

        var plan = await Plan(request);

        Assert.Equal([ErrorIds.DiskChanged], Ids(plan));
    }

    [Fact]
    public async Task Every_problem_is_reported_at_once()
    {
        _host.Snapshots.Add(Snap);
        _host.BlockJobs["vda"] = FakeHost.ReadyJob;
        _host.AgentPing = Results.VirshError(VirshErrorsTests.AgentNotConnected);

        var plan = await Plan();

        Assert.Equal(
            new[] { ErrorIds.LeftoverSnapshotMetadata, ErrorIds.ActiveBlockJob, ErrorIds.AgentNotConnected }.Order(StringComparer.Ordinal),
            Ids(plan).Order(StringComparer.Ordinal));
    }

    [Fact]
    public async Task Unknown_domain_stops_the_preflight_with_DomainNotFound()
    {
        var request = Request() with { DomainName = "linux_vm2" };

        var ex = await Assert.ThrowsAsync<VirshException>(() => Plan(request));

        Assert.Equal(ErrorIds.DomainNotFound, ex.ErrorId);
        Assert.Equal("linux_vm2", ex.Target);
    }
}
