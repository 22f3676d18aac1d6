using OdaKvmBackup.Core.Backup;
using OdaKvmBackup.Core.Libvirt;
using OdaKvmBackup.Core.Processes;
using OdaKvmBackup.Core.Tests.Support;

namespace OdaKvmBackup.Core.Tests;

/// <summary>The commit loop against a fake virsh/qemu-img that changes state as the real ones would.</summary>
public sealed class CommitServiceTests : IDisposable
{
    private const string Domain = "oda_vm1";
    private readonly TempFolder _temp = new("commit-tests");
    private readonly string _base;
    private readonly string _overlay;
    private readonly string _data;
    private readonly FakeHost _host = new(Domain);

    public CommitServiceTests()
    {
        var folder = _temp.Folder("vm_oda_vm1");
        _base = Path.Combine(folder, "oda_vm1_boot");
        _overlay = Path.Combine(folder, "oda_vm1_boot.FILE_STAGE_BACKUP.TEMP");
        _data = _temp.Combine("data1");
        File.WriteAllText(_base, "base");
        File.WriteAllText(_overlay, "overlay");
        File.WriteAllText(_data, "data");
        _host.LiveXml = OnOverlayXml(live: true);
        _host.InactiveXml = OnOverlayXml(live: false);
    }

    public void Dispose() => _temp.Dispose();

    private string OnOverlayXml(bool live) => TestDomain.Xml(Domain,
        [new TestDisk("vda", _overlay) { Backing = _base, BackingFormat = "raw" }, new TestDisk("vdb", _data, "raw")], live: live);

    private string OwnFilesXml(bool live) => TestDomain.Xml(Domain, [new TestDisk("vda", _base, "raw"), new TestDisk("vdb", _data, "raw")], live: live);

    private CommitTarget Vda => new(Domain, "vda", _base, "raw", _overlay);

    private CommitService Service(int pivotAttempts = 8) => new(_host.Virsh, _host.QemuImg, NullSink.Instance)
    {
        PivotAttempts = pivotAttempts,
        FirstBackOff = TimeSpan.FromMilliseconds(1),
        MaxBackOff = TimeSpan.FromMilliseconds(4),
    };

    /// <summary>What libvirt shows once the pivot is done: the disk on its own file, live and persistent, no job.</summary>
    private ProcessResult Pivoted(string stdout = "\nSuccessfully pivoted\n", string stderr = "\rBlock commit: [100 %]")
    {
        _host.LiveXml = OwnFilesXml(live: true);
        _host.InactiveXml = OwnFilesXml(live: false);
        _host.BlockJobs.Remove("vda");
        return Results.Ok(stdout, stderr);
    }

    /// <summary>blockcommit --pivot copied everything but the pivot was refused: the job waits, ready.</summary>
    private ProcessResult RefusedAfterCopy()
    {
        _host.BlockJobs["vda"] = FakeHost.ReadyJob;
        return Results.VirshError("\rBlock commit: [100 %]error: failed to pivot job for disk vda\n" + FakeHost.NotReadyForPivot);
    }

    private int Commits => _host.Count(c => c.Is("virsh", "blockcommit"));
    private int Pivots => _host.Count(c => c.Is("virsh", "blockjob") && c.Has("--pivot"));

    /// <summary>Every command the loop may issue when it gives up: queries, commit and pivot. Nothing that aborts,
    /// redefines, deletes or moves.</summary>
    private void AssertOnlyLookedCommittedAndPivoted()
    {
        Assert.All(_host.Calls, c =>
        {
            Assert.Equal("virsh", c.Program);
            Assert.Contains(c.Command, new[] { "domstate", "dumpxml", "blockjob", "blockcommit" });
            Assert.DoesNotContain("--abort", c.Args);
            Assert.DoesNotContain("--delete", c.Args);
        });
        Assert.True(File.Exists(_overlay), "the overlay must stay where it is");
        Assert.Equal("overlay", File.ReadAllText(_overlay));
        Assert.True(File.Exists(_base));
    }

    [Fact]
    public async Task Normal_commit_runs_blockcommit_once_and_checks_the_disk_is_back_on_its_file()
    {
        _host.OnBlockCommit = _ => Pivoted(stderr: "\rBlock commit: [ 34 %]\rBlock commit: [ 83 %]\rBlock commit: [100 %]");
        var percents = new List<int>();

        var outcome = await Service().CommitAsync(Vda, 0, percents.Add, CancellationToken.None);

        Assert.Equal(CommitOutcome.Committed, outcome);
        var commit = Assert.Single(_host.Calls, c => c.Command == "blockcommit");
        Assert.Equal(["blockcommit", "--domain", Domain, "--path", "vda", "--active", "--verbose", "--pivot"], commit.Args);
        Assert.Equal([34, 83, 100], percents);
        Assert.Equal(0, Pivots);
        // It looked again after the commit, and checked the saved definition too.
        var afterCommit = _host.Calls.SkipWhile(c => c.Command != "blockcommit").Skip(1).ToList();
        Assert.Contains(afterCommit, c => c.Command == "dumpxml" && !c.Has("--inactive"));
        Assert.Contains(afterCommit, c => c.Command == "dumpxml" && c.Has("--inactive"));
    }

    [Fact]
    public async Task Bandwidth_is_passed_to_blockcommit()
    {
        _host.OnBlockCommit = _ => Pivoted();

        await Service().CommitAsync(Vda, 20, null, CancellationToken.None);

        Assert.Equal(["--bandwidth", "20"], Assert.Single(_host.Calls, c => c.Command == "blockcommit").Args.TakeLast(2));
    }

    [Fact]
    public async Task Disk_already_on_its_own_file_is_left_alone()
    {
        _host.LiveXml = OwnFilesXml(live: true);
        _host.InactiveXml = OwnFilesXml(live: false);

        var outcome = await Service().CommitAsync(Vda, 0, null, CancellationToken.None);

        Assert.Equal(CommitOutcome.AlreadyOnOwnFile, outcome);
        Assert.Equal(0, Commits);
        Assert.Equal(0, Pivots);
    }

    [Theory]
    [InlineData(1, 8)]
    [InlineData(3, 8)]
    [InlineData(3, 4)] // the last refusal before giving up
    public async Task Pivot_not_ready_is_retried_until_it_succeeds(int refusals, int attempts)
    {
        _host.OnBlockCommit = _ => RefusedAfterCopy();
        var pivots = 0;
        _host.OnPivot = _ => ++pivots < refusals ? Results.VirshError(FakeHost.NotReadyForPivot) : Pivoted("\n", "");

        var outcome = await Service(pivotAttempts: attempts).CommitAsync(Vda, 0, null, CancellationToken.None);

        Assert.Equal(CommitOutcome.Committed, outcome);
        Assert.Equal(1, Commits); // the ready job is pivoted, never committed a second time
        Assert.Equal(refusals, Pivots);
        Assert.DoesNotContain(_host.Calls, c => c.Has("--abort"));
    }

    [Fact]
    public async Task Pivot_never_ready_gives_up_with_PivotNotReady_and_touches_no_file()
    {
        _host.OnBlockCommit = _ => RefusedAfterCopy();
        _host.OnPivot = _ => Results.VirshError(FakeHost.NotReadyForPivot);

        var ex = await Assert.ThrowsAsync<BackupException>(() => Service(pivotAttempts: 4).CommitAsync(Vda, 0, null, CancellationToken.None));

        Assert.Equal(ErrorIds.PivotNotReady, ex.ErrorId);
        Assert.Equal(BackupErrorCategory.OperationTimeout, ex.Category);
        Assert.Equal(Domain, ex.Target);
        Assert.Contains(_overlay, ex.Message, StringComparison.Ordinal);
        Assert.Contains("4 attempts", ex.Message, StringComparison.Ordinal);
        Assert.Contains($"Repair-KvmBackup -DomainName {Domain}", ex.FullMessage, StringComparison.Ordinal);
        Assert.Equal(4, Commits + Pivots);
        AssertOnlyLookedCommittedAndPivoted();
    }

    [Fact]
    public async Task Blockcommit_refused_every_time_also_gives_up_after_PivotAttempts()
    {
        // The job ends between attempts (as after an abort by someone else): each try is a fresh blockcommit.
        _host.OnBlockCommit = _ => Results.VirshError(FakeHost.NotReadyForPivot);

        var ex = await Assert.ThrowsAsync<BackupException>(() => Service(pivotAttempts: 3).CommitAsync(Vda, 0, null, CancellationToken.None));

        Assert.Equal(ErrorIds.PivotNotReady, ex.ErrorId);
        Assert.Equal(3, Commits);
        AssertOnlyLookedCommittedAndPivoted();
    }

    [Fact]
    public async Task Leftover_ready_job_is_pivoted_without_a_new_commit()
    {
        _host.BlockJobs["vda"] = FakeHost.ReadyJob;
        _host.OnPivot = _ => Pivoted("\n", "");

        var outcome = await Service().CommitAsync(Vda, 0, null, CancellationToken.None);

        Assert.Equal(CommitOutcome.PivotedLeftoverJob, outcome);
        Assert.Equal(0, Commits);
        var pivot = Assert.Single(_host.Calls, c => c.Has("--pivot"));
        Assert.Equal(["blockjob", "--domain", Domain, "--path", "vda", "--pivot"], pivot.Args);
    }

    [Fact]
    public async Task Leftover_ready_job_whose_pivot_is_refused_twice_is_pivoted_on_the_third_try()
    {
        _host.BlockJobs["vda"] = FakeHost.ReadyJob;
        var pivots = 0;
        _host.OnPivot = _ => ++pivots <= 2 ? Results.VirshError(FakeHost.NotReadyForPivot) : Pivoted("\n", "");

        var outcome = await Service().CommitAsync(Vda, 0, null, CancellationToken.None);

        Assert.Equal(CommitOutcome.PivotedLeftoverJob, outcome);
        Assert.Equal(3, Pivots);
        Assert.Equal(0, Commits);
    }

    [Fact]
    public async Task Leftover_job_still_copying_is_waited_for_then_pivoted()
    {
        _host.BlockJobs["vda"] = FakeHost.RunningJob;
        var looks = 0;
        _host.OnPivot = _ => Pivoted("\n", "");
        var percents = new List<int>();
        var virsh = new VirshClient(new FakeRunner(call =>
        {
            // The second look finds the job ready.
            if (call.Command == "blockjob" && call.Has("--info") && ++looks == 2)
                _host.BlockJobs["vda"] = FakeHost.ReadyJob;
            return _host.Runner.RunAsync(call.Program, call.Args).GetAwaiter().GetResult();
        }));
        var service = new CommitService(virsh, _host.QemuImg, NullSink.Instance) { FirstBackOff = TimeSpan.FromMilliseconds(1) };

        var outcome = await service.CommitAsync(Vda, 0, percents.Add, CancellationToken.None);

        Assert.Equal(CommitOutcome.PivotedLeftoverJob, outcome);
        Assert.Equal(0, Commits);
        Assert.Contains(50, percents);
    }

    [Fact]
    public async Task Block_job_this_module_did_not_start_is_not_pivoted()
    {
        _host.BlockJobs["vda"] = " type=Copy\n bandwidth=0\n cur=100\n end=100\n\n";

        var ex = await Assert.ThrowsAsync<BackupException>(() => Service().CommitAsync(Vda, 0, null, CancellationToken.None));

        Assert.Equal(ErrorIds.CommitFailed, ex.ErrorId);
        Assert.Contains("Copy", ex.Message, StringComparison.Ordinal);
        Assert.Contains($"virsh blockjob {Domain} vda --abort", ex.RecommendedAction, StringComparison.Ordinal);
        Assert.Equal(0, Pivots);
        Assert.Equal(0, Commits);
    }

    [Fact]
    public async Task Disk_on_a_file_that_is_neither_its_own_nor_the_overlay_is_not_committed()
    {
        var stranger = _temp.Combine("someone-elses.qcow2");
        _host.LiveXml = TestDomain.Xml(Domain, [new TestDisk("vda", stranger) { Backing = "/elsewhere/base", BackingFormat = "qcow2" }]);

        var ex = await Assert.ThrowsAsync<BackupException>(() => Service().CommitAsync(Vda, 0, null, CancellationToken.None));

        Assert.Equal(ErrorIds.CommitFailed, ex.ErrorId);
        Assert.Contains(stranger, ex.Message, StringComparison.Ordinal);
        Assert.Contains("Nothing was changed", ex.Message, StringComparison.Ordinal);
        Assert.Equal(0, Commits);
    }

    [Fact]
    public async Task Disk_gone_from_the_domain_is_an_error_naming_it()
    {
        _host.LiveXml = TestDomain.Xml(Domain, [new TestDisk("vdb", _data, "raw")]);

        var ex = await Assert.ThrowsAsync<BackupException>(() => Service().CommitAsync(Vda, 0, null, CancellationToken.None));

        Assert.Equal(ErrorIds.CommitFailed, ex.ErrorId);
        Assert.Contains("vda", ex.Message, StringComparison.Ordinal);
    }

    [Fact]
    public async Task Pivoted_disk_whose_saved_definition_still_names_the_overlay_is_reported()
    {
        _host.OnBlockCommit = _ =>
        {
            _host.LiveXml = OwnFilesXml(live: true); // the persistent XML is left on the overlay
            return Results.Ok("\nSuccessfully pivoted\n");
        };

        var ex = await Assert.ThrowsAsync<BackupException>(() => Service().CommitAsync(Vda, 0, null, CancellationToken.None));

        Assert.Equal(ErrorIds.CommitFailed, ex.ErrorId);
        Assert.Contains(_overlay, ex.Message, StringComparison.Ordinal);
        Assert.Contains($"virsh edit {Domain}", ex.RecommendedAction, StringComparison.Ordinal);
    }

    [Fact]
    public async Task Shut_off_domain_is_committed_with_qemu_img_and_redefined_on_its_own_raw_file()
    {
        _host.State = "shut off";
        _host.ImageInfo[_overlay] = TestDomain.ImageInfoJson(_overlay, "qcow2", 64L << 20, 200704, _base, "raw");
        string? defined = null;
        string? definedFile = null;
        _host.OnDefine = call =>
        {
            definedFile = call.ValueOf("--file")!;
            defined = File.ReadAllText(definedFile);
            return Results.Ok($"Domain '{Domain}' defined from {definedFile}\n\n");
        };

        var outcome = await Service().CommitAsync(Vda, 0, null, CancellationToken.None);

        Assert.Equal(CommitOutcome.CommittedOffline, outcome);
        var commands = _host.Calls.Select(c => (c.Program, c.Command)).ToList();
        Assert.True(commands.IndexOf(("qemu-img", "commit")) < commands.IndexOf(("virsh", "define")), "qemu-img commit runs before define");
        Assert.Equal(["commit", _overlay], Assert.Single(_host.Calls, c => c.Is("qemu-img", "commit")).Args);
        Assert.Equal(0, Commits);
        Assert.NotNull(defined);
        var domain = DomainXml.Parse(defined);
        var vda = Assert.Single(domain.Disks, d => d.Target == "vda");
        Assert.Equal(_base, vda.Source);
        Assert.Equal("raw", vda.Format);
        Assert.False(vda.OnOverlay);
        Assert.Equal(_data, Assert.Single(domain.Disks, d => d.Target == "vdb").Source);
        Assert.False(File.Exists(definedFile), "the temporary XML is removed");
        Assert.True(File.Exists(_overlay), "the overlay is not deleted");
    }

    [Fact]
    public async Task Shut_off_domain_whose_overlay_has_another_backing_file_is_not_touched()
    {
        _host.State = "shut off";
        _host.ImageInfo[_overlay] = TestDomain.ImageInfoJson(_overlay, "qcow2", 64L << 20, 200704, "/somewhere/else", "raw");

        var ex = await Assert.ThrowsAsync<BackupException>(() => Service().CommitAsync(Vda, 0, null, CancellationToken.None));

        Assert.Equal(ErrorIds.CommitFailed, ex.ErrorId);
        Assert.Contains("/somewhere/else", ex.Message, StringComparison.Ordinal);
        Assert.DoesNotContain(_host.Calls, c => c.Is("qemu-img", "commit") || c.Command == "define");
    }

    [Fact]
    public async Task Shut_off_domain_already_on_its_own_file_needs_nothing()
    {
        _host.State = "shut off";
        _host.InactiveXml = OwnFilesXml(live: false);

        var outcome = await Service().CommitAsync(Vda, 0, null, CancellationToken.None);

        Assert.Equal(CommitOutcome.AlreadyOnOwnFile, outcome);
        Assert.DoesNotContain(_host.Calls, c => c.Is("qemu-img", "commit") || c.Command == "define");
    }

    [Fact]
    public async Task Shut_off_domain_without_the_disk_is_an_error_not_already_on_its_own_file()
    {
        // Same answer as for a running domain: the disk is gone, so nothing says its overlay's data is in its file
        // (and callers delete overlays of disks reported back on their own files).
        _host.State = "shut off";
        _host.InactiveXml = TestDomain.Xml(Domain, [new TestDisk("vdb", _data, "raw")], live: false);

        var ex = await Record.ExceptionAsync(() => Service().CommitAsync(Vda, 0, null, CancellationToken.None));

        var error = Assert.IsType<BackupException>(ex);
        Assert.Equal(ErrorIds.CommitFailed, error.ErrorId);
        Assert.Contains("vda", error.Message, StringComparison.Ordinal);
    }

    [Fact]
    public async Task Cancelled_commit_runs_nothing()
    {
        using var cts = new CancellationTokenSource();
        await cts.CancelAsync();

        await Assert.ThrowsAnyAsync<OperationCanceledException>(() => Service().CommitAsync(Vda, 0, null, cts.Token));

        Assert.Empty(_host.Calls);
    }
}
