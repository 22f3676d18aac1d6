using System.Diagnostics;
using OdaKvmBackup.Core.Tests.Support;

namespace OdaKvmBackup.Core.Tests;

/// <summary>The commit loop against a fake virsh/qemu-img that changes state as the real ones would. In the state
/// folder's collection: an offline commit writes the definition it hands to virsh define there.</summary>
[Collection(StateDirectoryCollection.Name)]
public sealed class CommitServiceTests : IDisposable
{
    private const string Domain = "oda_vm1";
    private readonly TempFolder _temp = new("commit-tests");
    private readonly string _base;
    private readonly string _overlay;
    private readonly string _data;
    private readonly FakeHost _host = new(Domain);

    public CommitServiceTests(StateDirectoryFixture state)
    {
        state.Reset();
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
        _host.BlockJobs.TryRemove("vda", out _);
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
        Assert.Equal(["blockcommit", "--domain", Domain, "--path", "vda", "--active", "--verbose", "--pivot", "--base", Vda.Source], commit.Args);
        Assert.Equal([34, 83, 100], percents);
        Assert.Equal(0, Pivots);
        // It looked again after the commit, and checked the saved definition too.
        var afterCommit = _host.Calls.SkipWhile(c => c.Command != "blockcommit").Skip(1).ToList();
        Assert.Contains(afterCommit, c => c.Command == "dumpxml" && !c.Has("--inactive"));
        Assert.Contains(afterCommit, c => c.Command == "dumpxml" && c.Has("--inactive"));
    }

    // Time on the overlay ends when the loop has seen the disk back on its own file: the look after the pivot (state,
    // live and saved definitions, block job) is one round of virsh calls asked at once, not three one after another.
    [Fact]
    public async Task The_look_that_confirms_the_pivot_is_one_round_of_virsh_calls()
    {
        _host.OnBlockCommit = _ => Pivoted();
        var slow = new SlowQueries(_host.Runner, TimeSpan.FromMilliseconds(300));
        var service = new CommitService(new VirshClient(slow), _host.QemuImg, NullSink.Instance);

        var outcome = await service.CommitAsync(Vda, 0, null, CancellationToken.None);
        var afterPivot = DateTime.UtcNow - slow.BlockCommitEnded!.Value;

        Assert.Equal(CommitOutcome.Committed, outcome);
        Assert.True(afterPivot < TimeSpan.FromMilliseconds(550), $"the pivot was confirmed {afterPivot.TotalMilliseconds:0} ms after virsh blockcommit ended, with each query taking 300 ms");
        Assert.True(slow.MostAtOnce >= 4, $"at most {slow.MostAtOnce} queries ran at once");
    }

    /// <summary>virsh queries (domstate, dumpxml, blockjob --info) that each take <paramref name="delay"/>, as a busy
    /// host's virsh start-up does; notes when blockcommit ended and how many queries ran at once.</summary>
    private sealed class SlowQueries(FakeRunner inner, TimeSpan delay) : IProcessRunner
    {
        private int _running;
        public int MostAtOnce { get; private set; }
        public DateTime? BlockCommitEnded { get; private set; }

        public async Task<ProcessResult> RunAsync(string program, IReadOnlyList<string> arguments, Action<string>? onStandardErrorLine = null,
            CancellationToken cancellationToken = default, TimeSpan? timeout = null)
        {
            var query = arguments[0] is "domstate" or "dumpxml" || arguments[0] == "blockjob" && arguments.Contains("--info");
            if (!query)
            {
                var result = await inner.RunAsync(program, arguments, onStandardErrorLine, cancellationToken, timeout);
                if (arguments[0] == "blockcommit")
                    BlockCommitEnded = DateTime.UtcNow;
                return result;
            }
            lock (this)
                MostAtOnce = Math.Max(MostAtOnce, ++_running);
            try
            {
                await Task.Delay(delay, cancellationToken);
                return await inner.RunAsync(program, arguments, onStandardErrorLine, cancellationToken, timeout);
            }
            finally
            {
                lock (this)
                    _running--;
            }
        }
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

        AssertPivotNotReadyKeepsTheOverlay(ex, _overlay);
        Assert.Contains("4 attempts", ex.Message, StringComparison.Ordinal);
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
    public async Task The_definition_handed_to_virsh_define_is_0600_in_a_0700_folder_of_the_state_folder_and_removed_after()
    {
        // The full definition names every disk of the VM: never a file others can read, never in /tmp.
        _host.State = "shut off";
        _host.ImageInfo[_overlay] = TestDomain.ImageInfoJson(_overlay, "qcow2", 64L << 20, 200704, _base, "raw");
        string? definedFile = null;
        UnixFileMode? fileMode = null, folderMode = null;
        _host.OnDefine = call =>
        {
            definedFile = call.ValueOf("--file")!;
            fileMode = File.GetUnixFileMode(definedFile);
            folderMode = File.GetUnixFileMode(Path.GetDirectoryName(definedFile)!);
            return Results.Ok($"Domain '{Domain}' defined from {definedFile}\n\n");
        };

        using (Umask.Set(0))
            Assert.Equal(CommitOutcome.CommittedOffline, await Service().CommitAsync(Vda, 0, null, CancellationToken.None));

        Assert.NotNull(definedFile);
        Assert.StartsWith(Paths.StateDirectory.Root + "/", definedFile, StringComparison.Ordinal);
        Assert.Equal(UnixFileMode.UserRead | UnixFileMode.UserWrite, fileMode);
        Assert.Equal(UnixFileMode.UserRead | UnixFileMode.UserWrite | UnixFileMode.UserExecute, folderMode);
        Assert.False(File.Exists(definedFile), "the definition is removed once defined");
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

    // The watchdog: a commit that cannot catch up with the guest's writes is unthrottled, then bounded.

    /// <summary>An active commit that has copied all but the last byte and stays there: the guest writes as fast
    /// as the job copies (libvirt's end grows with cur), so it never becomes ready.</summary>
    private static string NeverCatchesUp(long bandwidthMiBps) => FakeHost.CommitJob(12976127, 12976128, bandwidthMiBps);

    /// <summary>Millisecond polling; each test shortens the one bound it is about, the others stay out of reach.</summary>
    private CommitService Watchdog(TimeSpan? convergence = null, TimeSpan? stall = null, TimeSpan? grace = null, IOperationSink? sink = null) =>
        new(_host.Virsh, _host.QemuImg, sink ?? NullSink.Instance)
        {
            FirstBackOff = TimeSpan.FromMilliseconds(1),
            MaxBackOff = TimeSpan.FromMilliseconds(4),
            PollInterval = TimeSpan.FromMilliseconds(5),
            ConvergenceTimeout = convergence ?? TimeSpan.FromSeconds(20),
            StallLimit = stall ?? TimeSpan.FromSeconds(20),
            VirshPivotGrace = grace ?? TimeSpan.FromSeconds(20),
        };

    private static string[] BlockJob(string option, params string[] value) => ["blockjob", "--domain", Domain, "--path", "vda", option, .. value];

    /// <summary>After giving up: nothing deleted, moved, redefined or committed offline; the overlay as it was.</summary>
    private void AssertNoFileMovedOrDeleted()
    {
        Assert.All(_host.Calls, c =>
        {
            Assert.Equal("virsh", c.Program);
            Assert.Contains(c.Command, new[] { "domstate", "dumpxml", "blockjob", "blockcommit" });
            Assert.DoesNotContain("--delete", c.Args);
            Assert.DoesNotContain("--pivot", c.Args.Where(_ => c.Command == "blockjob"));
        });
        Assert.True(File.Exists(_overlay), "the overlay must stay where it is");
        Assert.Equal("overlay", File.ReadAllText(_overlay));
        Assert.Equal("base", File.ReadAllText(_base));
    }

    private static void AssertPivotNotReadyKeepsTheOverlay(BackupException ex, string overlay)
    {
        Assert.Equal(ErrorIds.PivotNotReady, ex.ErrorId);
        Assert.Equal(BackupErrorCategory.OperationTimeout, ex.Category);
        Assert.Equal(Domain, ex.Target);
        Assert.Contains(overlay, ex.Message, StringComparison.Ordinal);
        Assert.Contains("neither moved nor deleted", ex.Message, StringComparison.Ordinal);
        Assert.Contains($"Repair-KvmBackup -DomainName {Domain}", ex.RecommendedAction, StringComparison.Ordinal);
    }

    [Fact]
    public async Task Throttled_job_that_gains_nothing_is_unthrottled_after_StallLimit_and_pivoted_once_ready()
    {
        _host.BlockJobs["vda"] = NeverCatchesUp(bandwidthMiBps: 1);
        var stall = TimeSpan.FromMilliseconds(100);
        var clock = Stopwatch.StartNew();
        TimeSpan? unthrottledAt = null;
        var looksBefore = 0;
        _host.OnBandwidth = _ =>
        {
            unthrottledAt = clock.Elapsed;
            looksBefore = _host.Count(c => c.Has("--info"));
            _host.BlockJobs["vda"] = FakeHost.ReadyJob; // without the limit it catches up
            return Results.Ok();
        };
        _host.OnPivot = _ => Pivoted("\n", "");
        var sink = new RecordingSink();

        var outcome = await Watchdog(stall: stall, sink: sink).CommitAsync(Vda, 0, null, CancellationToken.None);

        Assert.Equal(CommitOutcome.PivotedLeftoverJob, outcome);
        var calls = _host.Calls.ToList();
        var unthrottle = Assert.Single(calls, c => c.Has("--bandwidth"));
        Assert.Equal(BlockJob("--bandwidth", "0"), unthrottle.Args);
        Assert.True(unthrottledAt >= stall, $"the limit was lifted after {unthrottledAt?.TotalMilliseconds} ms, before the stall limit");
        Assert.True(looksBefore >= 3, "the job was watched before its limit was lifted");
        var pivot = Assert.Single(calls, c => c.Has("--pivot"));
        Assert.Equal(BlockJob("--pivot"), pivot.Args);
        Assert.True(calls.IndexOf(unthrottle) < calls.IndexOf(pivot));
        Assert.DoesNotContain(calls, c => c.Has("--abort"));
        Assert.Equal(0, Commits);
        var warning = Assert.Single(sink.Warnings);
        Assert.Contains("1 MiB/s", warning, StringComparison.Ordinal);
        Assert.Contains("lifting the limit", warning, StringComparison.Ordinal);
    }

    [Fact]
    public async Task Commit_started_with_a_limit_it_cannot_keep_up_with_is_unthrottled_and_virsh_pivots()
    {
        var unthrottled = new TaskCompletionSource(TaskCreationOptions.RunContinuationsAsynchronously);
        _host.OnBlockCommitAsync = async (_, stop) =>
        {
            _host.BlockJobs["vda"] = NeverCatchesUp(bandwidthMiBps: 1);
            await unthrottled.Task.WaitAsync(TimeSpan.FromSeconds(30), stop);
            return Pivoted(); // unthrottled, the job catches up and virsh's --pivot pivots it
        };
        _host.OnBandwidth = _ =>
        {
            unthrottled.TrySetResult();
            return Results.Ok();
        };

        var outcome = await Watchdog(stall: TimeSpan.FromMilliseconds(100)).CommitAsync(Vda, 1, null, CancellationToken.None);

        Assert.Equal(CommitOutcome.Committed, outcome);
        Assert.Equal(["--bandwidth", "1"], Assert.Single(_host.Calls, c => c.Command == "blockcommit").Args.TakeLast(2));
        Assert.Equal(BlockJob("--bandwidth", "0"), Assert.Single(_host.Calls, c => c.Has("--bandwidth") && c.Command == "blockjob").Args);
        Assert.Equal(0, Pivots);
        Assert.DoesNotContain(_host.Calls, c => c.Has("--abort"));
    }

    [Fact]
    public async Task Job_that_never_becomes_ready_is_aborted_after_ConvergenceTimeout_with_PivotNotReady()
    {
        _host.BlockJobs["vda"] = NeverCatchesUp(bandwidthMiBps: 0);
        var timeout = TimeSpan.FromMilliseconds(200);
        var clock = Stopwatch.StartNew();

        var ex = await Assert.ThrowsAsync<BackupException>(() => Watchdog(convergence: timeout).CommitAsync(Vda, 0, null, CancellationToken.None));

        Assert.True(clock.Elapsed >= timeout, $"gave up after {clock.Elapsed.TotalMilliseconds} ms");
        AssertPivotNotReadyKeepsTheOverlay(ex, _overlay);
        var calls = _host.Calls.ToList();
        var abort = Assert.Single(calls, c => c.Has("--abort"));
        Assert.Equal(BlockJob("--abort"), abort.Args);
        Assert.Same(abort, calls[^1]); // nothing after the abort
        Assert.DoesNotContain(calls, c => c.Has("--bandwidth")); // unlimited already: nothing to lift
        Assert.Equal(0, Commits);
        Assert.Equal(0, Pivots);
        Assert.False(_host.BlockJobs.ContainsKey("vda"), "the job is gone; the disk goes on writing to its overlay");
        AssertNoFileMovedOrDeleted();
    }

    [Fact]
    public async Task Blockcommit_whose_job_never_becomes_ready_is_stopped_and_aborted_with_PivotNotReady()
    {
        var virshStopped = false;
        var abortedAfterVirshStopped = false;
        _host.OnBlockCommitAsync = async (_, stop) =>
        {
            _host.BlockJobs["vda"] = NeverCatchesUp(bandwidthMiBps: 0);
            try
            {
                return await FakeHost.RunsUntilStopped(stop); // virsh --pivot waits for a READY that never comes
            }
            catch (OperationCanceledException)
            {
                virshStopped = true;
                throw;
            }
        };
        _host.OnAbort = call =>
        {
            abortedAfterVirshStopped = virshStopped;
            _host.BlockJobs.TryRemove("vda", out _);
            return Results.Ok();
        };
        var timeout = TimeSpan.FromMilliseconds(200);
        var clock = Stopwatch.StartNew();

        var ex = await Assert.ThrowsAsync<BackupException>(() => Watchdog(convergence: timeout).CommitAsync(Vda, 0, null, CancellationToken.None));

        Assert.True(clock.Elapsed >= timeout, $"gave up after {clock.Elapsed.TotalMilliseconds} ms");
        AssertPivotNotReadyKeepsTheOverlay(ex, _overlay);
        Assert.True(virshStopped, "the virsh blockcommit was stopped");
        Assert.True(abortedAfterVirshStopped, "the job was aborted once its virsh was stopped");
        Assert.Equal(1, Commits);
        Assert.Equal(BlockJob("--abort"), Assert.Single(_host.Calls, c => c.Has("--abort")).Args);
        Assert.Equal(0, Pivots);
        AssertNoFileMovedOrDeleted();
    }

    [Fact]
    public async Task Blockcommit_that_never_returns_while_its_job_is_ready_is_stopped_and_the_job_pivoted_after_the_grace()
    {
        var virshStopped = false;
        _host.OnBlockCommitAsync = async (_, stop) =>
        {
            _host.BlockJobs["vda"] = FakeHost.ReadyJob; // copied everything, but virsh never learns (READY event lost)
            try
            {
                return await FakeHost.RunsUntilStopped(stop);
            }
            catch (OperationCanceledException)
            {
                virshStopped = true;
                throw;
            }
        };
        var grace = TimeSpan.FromMilliseconds(150);
        var clock = Stopwatch.StartNew();
        TimeSpan? pivotedAt = null;
        _host.OnPivot = _ =>
        {
            pivotedAt = clock.Elapsed;
            return Pivoted("\n", "");
        };

        var outcome = await Watchdog(grace: grace).CommitAsync(Vda, 0, null, CancellationToken.None);

        Assert.Equal(CommitOutcome.Committed, outcome);
        Assert.True(virshStopped, "the hung virsh was stopped");
        // A .NET timer may fire up to a millisecond before its time (CI saw 149.75 ms for 150): 10 ms of slack, far
        // from the few milliseconds a pivot without the grace takes.
        Assert.True(pivotedAt >= grace - TimeSpan.FromMilliseconds(10), $"pivoted after {pivotedAt?.TotalMilliseconds} ms, within the grace given to virsh");
        Assert.Equal(1, Commits);
        Assert.Equal(BlockJob("--pivot"), Assert.Single(_host.Calls, c => c.Is("virsh", "blockjob") && c.Has("--pivot")).Args);
        Assert.DoesNotContain(_host.Calls, c => c.Has("--abort"));
    }

    [Fact]
    public async Task Blockcommit_whose_job_starts_after_the_first_look_is_left_to_finish_and_pivot()
    {
        // virsh connects to libvirtd before it starts the job, so the first look may find no job yet; that is not
        // a finished job, and a commit that copies for longer than the grace must not lose its virsh for it.
        var grace = TimeSpan.FromMilliseconds(100);
        var virshStopped = false;
        _host.OnBlockCommitAsync = async (_, stop) =>
        {
            try
            {
                await Task.Delay(50, stop);
                _host.BlockJobs["vda"] = FakeHost.RunningJob;
                await Task.Delay(grace * 3, stop);
                return Pivoted();
            }
            catch (OperationCanceledException)
            {
                virshStopped = true;
                throw;
            }
        };

        var outcome = await Watchdog(convergence: TimeSpan.FromSeconds(5), grace: grace).CommitAsync(Vda, 0, null, CancellationToken.None);

        Assert.Equal(CommitOutcome.Committed, outcome);
        Assert.False(virshStopped, "virsh was stopped while its job was copying");
        Assert.Equal(1, Commits);
        Assert.Equal(0, Pivots);
        Assert.DoesNotContain(_host.Calls, c => c.Has("--abort"));
    }

    [Fact]
    public async Task Blockcommit_that_hangs_without_starting_a_job_is_bounded_by_ConvergenceTimeout()
    {
        _host.OnBlockCommitAsync = (_, stop) => FakeHost.RunsUntilStopped(stop);

        var ex = await Assert.ThrowsAsync<BackupException>(() =>
            Watchdog(convergence: TimeSpan.FromMilliseconds(150), grace: TimeSpan.FromMilliseconds(50)).CommitAsync(Vda, 0, null, CancellationToken.None));

        AssertPivotNotReadyKeepsTheOverlay(ex, _overlay);
        Assert.Equal(1, Commits); // stopped and reported, not started again and again
        AssertNoFileMovedOrDeleted();
    }

    private sealed class RecordingSink : IOperationSink
    {
        private readonly List<string> _warnings = new();

        public IReadOnlyList<string> Warnings
        {
            get
            {
                lock (_warnings)
                    return _warnings.ToList();
            }
        }

        public void Verbose(string message) { }

        public void Warning(string message)
        {
            lock (_warnings)
                _warnings.Add(message);
        }

        public void Progress(ProgressUpdate update) { }
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
