using OdaKvmBackup.Core.Tests.Support;

namespace OdaKvmBackup.Core.Tests;

/// <summary>The preflight, against a fake virsh/qemu-img, with the disks in a temp folder so the file-system
/// checks (overlay folder, leftover overlay, free space) look at real folders.</summary>
[Collection(StateDirectoryCollection.Name)]
public sealed class SnapshotServicePlanTests : IDisposable
{
    private const string Domain = "oda_vm1";
    private const string Snap = BackupNames.DefaultSnapshotName;
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
                _host.ImageInfo.TryAdd(file, TestDomain.ImageInfoJson(file, "raw", 64L << 20, 1L << 20));
            }
        }
        _host.UseDisks(agentState, disks);
    }

    private SnapshotService Service => new(new HostTools(_host.Virsh, _host.QemuImg));

    private SnapshotRequest Request(IPreflightCheck[]? checks = null, bool crashConsistent = false, string? overlayDirectory = null, params string[] targets)
    {
        var disks = DomainXml.Parse(_host.LiveXml, _host.State).Disks.Where(d => targets.Length == 0 || targets.Contains(d.Target)).ToList();
        return new SnapshotRequest(Domain, disks, Snap, overlayDirectory, crashConsistent, checks ?? []);
    }

    /// <summary>Copy-VmDisk's contribution, for a destination folder.</summary>
    private static IPreflightCheck[] CopyTo(string destination, bool force = false) => [new CopyDestinationCheck(new LocalBackupStore(destination), force)];

    private static IPreflightCheck[] CopyTo(IBackupStore store) => [new CopyDestinationCheck(store, false)];

    private Task<SnapshotPlan> Plan(SnapshotRequest? request = null) => Service.PlanAsync(request ?? Request(), CancellationToken.None);

    private static List<string> Ids(SnapshotPlan plan) => plan.Problems.Select(p => p.ErrorId).ToList();

    /// <summary>Only queries ran: nothing that snapshots, commits, deletes or redefines.</summary>
    private void AssertReadOnly()
    {
        Assert.NotEmpty(_host.Calls);
        Assert.All(_host.Calls, c => Assert.Contains(c.Command, new[] { "domstate", "dumpxml", "snapshot-list", "blockjob", "qemu-agent-command", "info", "list" }));
        Assert.All(_host.Calls.Where(c => c.Command == "blockjob"), c => Assert.True(c.Has("--info"), c.ToString()));
    }

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
        Assert.Empty(plan.Run.ExcludedDisks);
        Assert.Empty(plan.Warnings);
        Assert.Equal(_host.InactiveXml, plan.Run.DomainXml);
        Assert.Equal(RunPhase.Planned, plan.Run.Phase);
        Assert.Equal(BackupConsistency.Quiesced, plan.Run.Consistency);
        Assert.All(plan.Disks, d => Assert.Equal(BackupStage.Planned, d.State));
        Assert.Contains(_host.Calls, c => c.Command == "qemu-agent-command");
        AssertReadOnly();
    }

    [Fact]
    public async Task Disks_not_piped_are_excluded_from_the_snapshot_and_recorded_with_the_reason()
    {
        var plan = await Plan(Request(targets: "vda"));

        Assert.Empty(Ids(plan));
        Assert.Equal(["vda"], plan.Disks.Select(d => d.Target));
        Assert.Equal(["vdb"], plan.ExcludedTargets);
        Assert.Equal(new ExcludedDisk("vdb", _data, "not piped to New-KvmDiskSnapshot"), Assert.Single(plan.Run.ExcludedDisks));
    }

    [Fact]
    public async Task Read_only_disk_is_recorded_as_excluded_because_it_is_read_only()
    {
        var iso = _temp.Combine("drivers.img");
        UseDisks(new TestDisk("vda", _boot, "raw"), new TestDisk("vdb", _data, "raw"), new TestDisk("vdc", iso, "raw") { ReadOnly = true });

        var plan = await Plan(Request(targets: ["vda", "vdb"]));

        Assert.Empty(Ids(plan));
        Assert.Equal(new ExcludedDisk("vdc", iso, "read-only"), Assert.Single(plan.Run.ExcludedDisks));
        Assert.Empty(plan.ExcludedTargets); // libvirt never snapshots a read-only disk: no snapshot=no needed
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
    public async Task Disk_on_a_backing_chain_we_did_not_make_is_refused_with_advice_to_blockpull_never_to_blockcommit()
    {
        // A linked clone: its own file sits on a template that other clones share. A commit would write this
        // clone's data into the template and corrupt every other clone.
        var template = _temp.Combine("ol8-template.qcow2");
        UseDisks(new TestDisk("vda", _boot) { Backing = template, BackingFormat = "qcow2" }, new TestDisk("vdb", _data, "raw"));

        var plan = await Plan();

        var problem = Assert.Single(plan.Problems);
        Assert.Equal(ErrorIds.DiskHasForeignBackingChain, problem.ErrorId);
        Assert.Contains(template, problem.Message, StringComparison.Ordinal);
        Assert.Contains($"virsh blockpull {Domain} vda", problem.RecommendedAction, StringComparison.Ordinal);
        Assert.DoesNotContain("virsh blockcommit", problem.FullMessage, StringComparison.Ordinal);
        Assert.DoesNotContain("Repair-KvmBackup", problem.FullMessage, StringComparison.Ordinal);
        AssertReadOnly();
    }

    [Fact]
    public async Task Shareable_disk_is_refused_with_SharedDiskNotSupported_and_nothing_is_changed()
    {
        var asm = Path.Combine(_temp.Folder("asm"), "asm_disk1");
        UseDisks(new TestDisk("vda", _boot, "raw"), new TestDisk("vdb", asm, "raw") { Shareable = true });

        var plan = await Plan();

        var problem = Assert.Single(plan.Problems);
        Assert.Equal(ErrorIds.SharedDiskNotSupported, problem.ErrorId);
        Assert.Equal(Domain, problem.Target);
        Assert.Contains("vdb", problem.Message, StringComparison.Ordinal);
        Assert.Contains(asm, problem.Message, StringComparison.Ordinal);
        Assert.Contains("Shareable", problem.RecommendedAction, StringComparison.Ordinal);
        AssertReadOnly();
        Assert.False(File.Exists(asm + "." + Snap));
    }

    [Fact]
    public async Task Shareable_disk_left_out_of_the_pipeline_does_not_stop_the_backup_of_the_others()
    {
        var asm = Path.Combine(_temp.Folder("asm"), "asm_disk1");
        UseDisks(new TestDisk("vda", _boot, "raw"), new TestDisk("vdb", asm, "raw") { Shareable = true });

        var plan = await Plan(Request(targets: "vda"));

        Assert.Empty(Ids(plan));
        Assert.Equal(["vdb"], plan.ExcludedTargets);
    }

    [Fact]
    public async Task Two_disks_with_the_same_file_name_in_different_folders_get_distinct_set_files_and_retained_names()
    {
        var a = Path.Combine(_temp.Folder("vdisk_a"), "disk");
        var b = Path.Combine(_temp.Folder("vdisk_b"), "disk");
        UseDisks(new TestDisk("vda", a, "raw"), new TestDisk("vdb", b, "raw"));

        var plan = await Plan();

        Assert.Empty(Ids(plan));
        Assert.Equal([a + "." + Snap, b + "." + Snap], plan.Disks.Select(d => d.Overlay));
        Assert.Equal(2, plan.Disks.Select(d => d.SetFile).Distinct(StringComparer.Ordinal).Count());
        Assert.Equal(2, plan.Disks.Select(d => d.RetainedName).Distinct(StringComparer.Ordinal).Count());
    }

    [Fact]
    public async Task Two_disks_with_the_same_file_name_get_distinct_overlays_in_an_overlay_folder()
    {
        var a = Path.Combine(_temp.Folder("vdisk_a"), "disk");
        var b = Path.Combine(_temp.Folder("vdisk_b"), "disk");
        UseDisks(new TestDisk("vda", a, "raw"), new TestDisk("vdb", b, "raw"));
        var overlays = _temp.Folder("overlays");

        var plan = await Plan(Request(overlayDirectory: overlays));

        Assert.Empty(Ids(plan));
        Assert.Equal([Path.Combine(overlays, $"{Domain}.vda.disk.{Snap}"), Path.Combine(overlays, $"{Domain}.vdb.disk.{Snap}")], plan.Disks.Select(d => d.Overlay));
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

    /// <summary>Only an agent that cannot freeze the guest is a problem of the plan, listed with the others; any
    /// other failure of virsh while asking it stops the plan with that error, as every other question does.</summary>
    [Fact]
    public async Task Agent_question_that_fails_for_another_reason_is_thrown_not_listed()
    {
        _host.AgentPing = Results.VirshError("error: failed to connect to the hypervisor\nerror: Cannot recv data: Connection reset by peer\n");

        var ex = await Assert.ThrowsAnyAsync<BackupException>(() => Plan());

        Assert.NotEqual(ErrorIds.AgentNotConnected, ex.ErrorId);
        Assert.Contains("Connection reset by peer", ex.Message, StringComparison.Ordinal);
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
        Assert.Equal(BackupConsistency.Cold, plan.Run.Consistency);
        Assert.Empty(Ids(plan));
        Assert.Equal(["vda", "vdb"], plan.Disks.Select(d => d.Target));
        Assert.All(plan.Disks, d => Assert.Null(d.Overlay));
        Assert.DoesNotContain(_host.Calls, c => c.Command is "qemu-agent-command" or "blockjob" or "snapshot-list");
        AssertReadOnly();
    }

    [Fact]
    public async Task Two_disks_whose_files_differ_only_in_extension_get_distinct_overlays_beside_them()
    {
        var a = Path.Combine(_bootFolder, "disk a.qcow2");
        var b = Path.Combine(_bootFolder, "disk a.raw");
        UseDisks(new TestDisk("vda", a), new TestDisk("vdb", b, "raw"));

        var plan = await Plan();

        Assert.Empty(plan.Problems);
        Assert.Equal([Path.Combine(_bootFolder, $"disk a.vda.{Snap}"), Path.Combine(_bootFolder, $"disk a.vdb.{Snap}")], plan.Disks.Select(d => d.Overlay));
        Assert.All(plan.Disks, d => Assert.True(BackupNames.LooksLikeOverlay(d.Overlay!, Snap)));
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
    public async Task Block_device_at_the_destination_check_gets_a_warning_not_a_silent_pass()
    {
        var image = _temp.Combine("lv.img");
        Files.Image(image, 8L * Files.MiB, [(0, 4096)]);
        using var device = LoopDevice.Attach(image);
        UseDisks(new TestDisk("vda", _boot, "raw"), new TestDisk("vdc", device.Path, "raw", "block"));
        // qemu-img reports no allocation for a block device.
        _host.ImageInfo[device.Path] = TestDomain.ImageInfoJson(device.Path, "raw", 8L << 20, 0);

        var plan = await Plan(Request(CopyTo(_temp.Folder("backups")), overlayDirectory: _temp.Folder("overlays")));

        Assert.Empty(Ids(plan));
        var warning = Assert.Single(plan.Warnings);
        Assert.Contains(device.Path, warning, StringComparison.Ordinal);
        Assert.Contains("block device", warning, StringComparison.Ordinal);
        Assert.Contains("8.0 MiB", warning, StringComparison.Ordinal);
    }

    [Theory]
    [InlineData("vmdk")]
    [InlineData("vdi")]
    [InlineData("qed")]
    public async Task Disk_of_a_format_other_than_raw_or_qcow2_is_refused_before_any_snapshot_since_no_set_of_it_could_be_restored(string format)
    {
        UseDisks(new TestDisk("vda", _boot, "raw"), new TestDisk("vdb", _data, format));

        var plan = await Plan(Request());

        var problem = Assert.Single(plan.Problems, p => p.ErrorId == ErrorIds.UnsupportedDisk);
        Assert.Contains($"'{format}'", problem.FullMessage, StringComparison.Ordinal);
        Assert.Contains("qemu-img convert", problem.FullMessage, StringComparison.Ordinal);
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

        var plan = await Plan(Request(CopyTo(destination)));

        var problem = Assert.Single(plan.Problems);
        Assert.Equal(ErrorIds.DestinationInsideDiskFolder, problem.ErrorId);
        Assert.Equal(BackupErrorCategory.InvalidArgument, problem.Category);
        Assert.Contains(_bootFolder, problem.Message, StringComparison.Ordinal);
    }

    [Fact]
    public async Task Destination_that_is_a_disk_folder_is_refused()
    {
        var plan = await Plan(Request(CopyTo(_bootFolder + "/")));

        Assert.Equal([ErrorIds.DestinationInsideDiskFolder], Ids(plan));
    }

    [Fact]
    public async Task Destination_beside_the_disk_folders_is_fine()
    {
        var destination = _temp.Folder("vm_oda_vm1-backups");

        var plan = await Plan(Request(CopyTo(destination)));

        Assert.Empty(Ids(plan));
        Assert.Empty(plan.Warnings);
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
    public async Task Fully_allocated_vdisk_holding_little_data_is_not_refused_where_its_allocation_would_not_fit_only_warned()
    {
        // ODA's vdisks are fully allocated raw files: 320 MiB allocated, 24 MiB of data. The copy is sparse, so it
        // needs about 24 MiB; a destination with 150 MiB free must not be refused.
        var vdisk = Path.Combine(_temp.Folder("vdisk_disco"), "disco_secundario");
        Files.Image(vdisk, 320L * Files.MiB, [(0, 8 * Files.MiB), (100L * Files.MiB, 8 * Files.MiB), (300L * Files.MiB, 8 * Files.MiB)], allocate: true);
        Assert.True(Files.AllocatedBytes(vdisk) >= 320L * Files.MiB, "precondition: the vdisk is fully allocated");
        _host.ImageInfo[vdisk] = TestDomain.ImageInfoJson(vdisk, "raw", 320L * Files.MiB, Files.AllocatedBytes(vdisk));
        UseDisks(new TestDisk("vda", _boot, "raw"), new TestDisk("vdb", vdisk, "raw"));
        var store = new InterceptingStore(_temp.Folder("backups")) { FreeBytes = 150L * Files.MiB };

        var plan = await Plan(Request(CopyTo(store)));

        Assert.Empty(Ids(plan));
        var warning = Assert.Single(plan.Warnings);
        Assert.Contains("150.0 MiB", warning, StringComparison.Ordinal);
        Assert.Contains(store.Location, warning, StringComparison.Ordinal);
        Assert.Contains("sparse", warning, StringComparison.Ordinal);
    }

    [Fact]
    public async Task Destination_with_room_for_every_allocated_byte_gets_no_warning()
    {
        var store = new InterceptingStore(_temp.Folder("backups")) { FreeBytes = 3L * Files.MiB }; // the disks hold 1 MiB each

        var plan = await Plan(Request(CopyTo(store)));

        Assert.Empty(Ids(plan));
        Assert.Empty(plan.Warnings);
    }

    [Theory]
    [InlineData(0L)]
    [InlineData(512L * 1024)]
    public async Task Destination_with_almost_no_room_is_refused(long free)
    {
        var store = new InterceptingStore(_temp.Folder("backups")) { FreeBytes = free };

        var plan = await Plan(Request(CopyTo(store)));

        var problem = Assert.Single(plan.Problems);
        Assert.Equal(ErrorIds.NotEnoughSpaceAtDestination, problem.ErrorId);
        Assert.Equal(BackupErrorCategory.ResourceUnavailable, problem.Category);
        Assert.Contains(store.Location, problem.Message, StringComparison.Ordinal);
    }

    [Fact]
    public async Task Existing_set_of_this_seconds_run_id_is_never_reused_the_run_takes_the_next_second()
    {
        var destination = _temp.Folder("backups");
        var taken = BackupNames.RunId(DateTime.UtcNow);
        Directory.CreateDirectory(Path.Combine(destination, Domain, taken));

        var plan = await Plan(Request(CopyTo(destination)));

        Assert.Empty(Ids(plan));
        Assert.NotEqual(taken, plan.RunId);
        Assert.False(Directory.Exists(Path.Combine(destination, Domain, plan.RunId)));
    }

    // Whoever else can write to a folder the backup writes into could swap a copy, a manifest or the folder itself:
    // an existing <domain> folder (or set folder, or retention <domain> folder) must be the writer's own, closed to
    // group and others, and a real folder. The run stops before its snapshot, naming the folder, owner, mode and fix.
    private const string UnsafeFolder = "UnsafeDestinationFolder";

    [Theory]
    [InlineData(0, "0777", "0777")]
    [InlineData(0, "0770", "0770")]
    [InlineData(0, "0755", null)]      // others may read (the user's choice), not write
    [InlineData(0, "0700", null)]
    [InlineData(65534, "0700", "0700")] // closed, but another user's
    public async Task An_existing_domain_folder_under_the_destination_must_be_the_writer_s_own_and_closed_to_others(int owner, string mode, string? refusedMode)
    {
        var destination = _temp.Folder("backups");
        var folder = Directory.CreateDirectory(Path.Combine(destination, Domain)).FullName;
        File.SetUnixFileMode(folder, (UnixFileMode)Convert.ToInt32(mode, 8));
        Assert.Equal(0, TestSshServer.Run("chown", [owner.ToString(System.Globalization.CultureInfo.InvariantCulture), folder]).Code);

        var plan = await Plan(Request(CopyTo(destination)));

        if (refusedMode is null)
        {
            Assert.Empty(Ids(plan));
            return;
        }
        var problem = Assert.Single(plan.Problems);
        Assert.Equal(UnsafeFolder, problem.ErrorId);
        Assert.Contains($"'{folder}'", problem.Message, StringComparison.Ordinal);
        Assert.Contains($"uid {owner}", problem.Message, StringComparison.Ordinal);
        Assert.Contains($"mode {refusedMode}", problem.Message, StringComparison.Ordinal);
        Assert.Contains($"chown 0 '{folder}'", problem.RecommendedAction, StringComparison.Ordinal);
        Assert.Contains($"chmod 700 '{folder}'", problem.RecommendedAction, StringComparison.Ordinal);
        Assert.Equal(mode, Convert.ToString((int)File.GetUnixFileMode(folder), 8).PadLeft(4, '0')); // nothing was changed
    }

    [Fact]
    public async Task A_domain_folder_that_is_a_symbolic_link_is_refused_not_followed()
    {
        var destination = _temp.Folder("backups");
        var elsewhere = _temp.Folder("elsewhere");
        File.SetUnixFileMode(elsewhere, UnixFileMode.UserRead | UnixFileMode.UserWrite | UnixFileMode.UserExecute);
        Directory.CreateSymbolicLink(Path.Combine(destination, Domain), elsewhere);

        var plan = await Plan(Request(CopyTo(destination)));

        var problem = Assert.Single(plan.Problems);
        Assert.Equal(UnsafeFolder, problem.ErrorId);
        Assert.Contains("symbolic link", problem.Message, StringComparison.Ordinal);
    }

    [Fact]
    public async Task An_existing_retention_domain_folder_writable_by_others_is_refused()
    {
        var retention = _temp.Folder("retention");
        var folder = Directory.CreateDirectory(Path.Combine(retention, Domain)).FullName;
        File.SetUnixFileMode(folder, (UnixFileMode)Convert.ToInt32("0775", 8));

        var plan = await Plan(Request([new RetentionCheck(retention)]));

        var problem = Assert.Single(plan.Problems);
        Assert.Equal(UnsafeFolder, problem.ErrorId);
        Assert.Contains($"'{folder}'", problem.Message, StringComparison.Ordinal);
        Assert.Contains("mode 0775", problem.Message, StringComparison.Ordinal);
    }

    [Fact]
    public async Task An_existing_domain_folder_on_an_SSH_server_writable_by_others_is_refused_naming_the_server_path()
    {
        using var server = new TestSshServer();
        var root = server.DataFolder("ownership");
        var folder = Directory.CreateDirectory(Path.Combine(root, Domain)).FullName;
        File.SetUnixFileMode(folder, (UnixFileMode)Convert.ToInt32("0777", 8));
        await using var store = server.Store("good", root);

        var plan = await Plan(Request(CopyTo(store)));

        var problem = Assert.Single(plan.Problems);
        Assert.Equal(UnsafeFolder, problem.ErrorId);
        Assert.Contains($"good:{folder}", problem.Message, StringComparison.Ordinal);
        Assert.Contains("mode 0777", problem.Message, StringComparison.Ordinal);
        Assert.Contains("on the server", problem.RecommendedAction, StringComparison.Ordinal);
    }

    [Fact]
    public async Task Retention_in_a_disk_folder_is_refused()
    {
        var plan = await Plan(Request([new RetentionCheck(_bootFolder)]));

        Assert.Equal([ErrorIds.RetentionIsDiskFolder], Ids(plan));
    }

    [Fact]
    public async Task Unfinished_run_in_the_journal_asks_for_Repair_KvmBackup()
    {
        RunJournal.Save(Journal(RunPhase.OnOverlays));

        var plan = await Plan();

        var problem = Assert.Single(plan.Problems);
        Assert.Equal(ErrorIds.UnfinishedBackup, problem.ErrorId);
        Assert.Contains("20250101-020304", problem.Message, StringComparison.Ordinal);
        Assert.Contains($"Repair-KvmBackup -DomainName {Domain}", problem.FullMessage, StringComparison.Ordinal);
        Assert.False(plan.ClosesStaleJournal);
    }

    [Fact]
    public async Task Journal_of_a_run_that_is_over_is_closed_when_the_next_snapshot_starts()
    {
        RunJournal.Save(Journal(RunPhase.Committed));

        var plan = await Plan();

        Assert.Empty(Ids(plan));
        Assert.True(plan.ClosesStaleJournal);
        Assert.NotNull(RunJournal.TryLoad(Domain)); // the preflight changes nothing
    }

    [Fact]
    public async Task Committed_run_whose_overlays_are_still_beside_the_disks_asks_to_keep_or_delete_them()
    {
        RunJournal.Save(Journal(RunPhase.Committed));
        File.WriteAllText(_boot + "." + Snap, "what the guest wrote during that backup");

        var plan = await Plan();

        Assert.Contains(ErrorIds.LeftoverOverlayFile, Ids(plan));
        Assert.Contains(plan.Problems, p => p.ErrorId == ErrorIds.LeftoverOverlayFile && p.RecommendedAction!.Contains("-RetentionPath", StringComparison.Ordinal));
        Assert.False(plan.ClosesStaleJournal);
    }

    private RunRecord Journal(RunPhase phase) => new()
    {
        DomainName = Domain,
        RunId = "20250101-020304",
        SnapshotName = Snap,
        Consistency = BackupConsistency.Quiesced,
        Phase = phase,
        DomainXml = _host.InactiveXml,
        Disks = [new DiskRecord { Target = "vda", Source = _boot, Format = "raw", Overlay = _boot + "." + Snap, SetFile = "oda_vm1_boot", RetainedName = "oda_vm1_boot." + Snap }],
    };

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
