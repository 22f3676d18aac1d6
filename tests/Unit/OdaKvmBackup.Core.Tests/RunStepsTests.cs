using System.Diagnostics;
using OdaKvmBackup.Core.Tests.Support;

namespace OdaKvmBackup.Core.Tests;

/// <summary>The run's steps as the cmdlets call them (BackupRun.Steps.cs): what New-KvmDiskSnapshot,
/// Invoke-BlockCommit and Move-OverlayToRetention do and tell the user. Written for the survivors of the Stryker run
/// of the safety logic (docs/mutation-survivors.md); each test names the mutants it kills.</summary>
[Collection(StateDirectoryCollection.Name)]
public sealed class RunStepsTests : IDisposable
{
    private const string Domain = Bench.Domain;
    private const string IoError = "error: internal error: unable to execute QEMU command 'block-commit': Could not reopen file: Input/output error\n";
    private readonly Bench _b = new();
    private readonly RecordingSink _sink = new();
    private readonly StateDirectoryFixture _state;

    public RunStepsTests(StateDirectoryFixture state)
    {
        _state = state;
        state.Reset();
        _b.Host.OnBlockCommit = _b.Host.CommitAndPivot;
    }

    public void Dispose() => _b.Dispose();

    private string BootOverlay => Bench.OverlayOf(_b.Boot);

    // ---------------------------------------------------------------- commit

    // Kills BackupRun.Steps.cs:108 (the object initializer that passes ConvergenceTimeout to CommitService removed:
    // Invoke-BlockCommit -TimeoutSec was ignored, the commit waited the default 15 minutes) and :115 (the commit's
    // own recommended action replaced by the generic one).
    [Fact]
    public async Task A_commit_that_does_not_catch_up_within_the_timeout_given_is_stopped_and_says_how_to_finish()
    {
        var run = await _b.SnapshottedAsync();
        // A commit job of this run that never becomes ready: the guest writes as fast as it copies.
        _b.Host.BlockJobs["vda"] = FakeHost.CommitJob(12976127, 12976128);
        using var bound = new CancellationTokenSource(TimeSpan.FromSeconds(15));
        var clock = Stopwatch.StartNew();

        var ex = await Assert.ThrowsAsync<BackupException>(() => run.CommitAsync("vda", 0, TimeSpan.FromSeconds(1), _sink, bound.Token));

        Assert.True(clock.Elapsed >= TimeSpan.FromSeconds(1), $"gave up after {clock.Elapsed.TotalMilliseconds} ms");
        Assert.Equal(ErrorIds.PivotNotReady, ex.ErrorId);
        Assert.Contains("did not catch up with the guest's writes within 1 s", ex.Message, StringComparison.Ordinal);
        Assert.EndsWith($"'{Domain}' still writes to the overlay '{BootOverlay}' for vda.", ex.Message, StringComparison.Ordinal);
        Assert.Equal($"Run Repair-KvmBackup -DomainName {Domain} when the guest writes less; the overlay must stay where it is until then.", ex.RecommendedAction);
        Assert.Single(_b.Host.Calls, c => c.Is("virsh", "blockjob") && c.Has("--abort"));
        Assert.True(File.Exists(BootOverlay), "the overlay must stay where it is");
        Assert.Equal(BootOverlay, _b.Host.Disk("vda").Source);
    }

    // Kills BackupRun.Steps.cs:115 (null coalescing: the failing commit's own recommended action dropped).
    [Fact]
    public async Task A_commit_refused_by_a_block_job_it_did_not_start_keeps_the_fix_that_names_that_job()
    {
        var run = await _b.SnapshottedAsync();
        _b.Host.BlockJobs["vda"] = " type=Copy\n bandwidth=0\n cur=100\n end=100\n\n";

        var ex = await Assert.ThrowsAsync<BackupException>(() => run.CommitAsync("vda", 0, TimeSpan.FromSeconds(5), _sink, CancellationToken.None));

        Assert.Equal(ErrorIds.CommitFailed, ex.ErrorId);
        Assert.Contains("runs a block job this module did not start (Copy", ex.Message, StringComparison.Ordinal);
        Assert.EndsWith($"'{Domain}' still writes to the overlay '{BootOverlay}' for vda.", ex.Message, StringComparison.Ordinal);
        Assert.Equal($"Let it finish or abort it (virsh blockjob {Domain} vda --abort), then run Repair-KvmBackup -DomainName {Domain}.", ex.RecommendedAction);
        Assert.DoesNotContain(_b.Host.Calls, c => c.Is("virsh", "blockcommit"));
    }

    // Kills BackupRun.Steps.cs:115 (null coalescing, the other way: a failing commit without a fix of its own left
    // the user without any).
    [Fact]
    public async Task A_commit_that_fails_without_a_fix_of_its_own_sends_the_user_to_Repair()
    {
        var run = await _b.SnapshottedAsync();
        _b.Host.LiveXml = TestDomain.Xml(Domain, [_b.Host.Disk("vdb")], live: true); // vda was detached meanwhile

        var ex = await Assert.ThrowsAsync<BackupException>(() => run.CommitAsync("vda", 0, TimeSpan.FromSeconds(5), _sink, CancellationToken.None));

        Assert.Equal(ErrorIds.CommitFailed, ex.ErrorId);
        Assert.StartsWith($"'{Domain}' has no disk vda any more.", ex.Message, StringComparison.Ordinal);
        Assert.Equal($"Run Repair-KvmBackup -DomainName {Domain}.", ex.RecommendedAction);
    }

    // Kills BackupRun.Steps.cs:130 (`d.Target == target` -> `!=`: the line Invoke-BlockCommit -Verbose writes gave
    // the time another disk spent on its overlay, or none).
    [Fact]
    public async Task A_commit_that_works_says_the_disk_writes_to_its_own_file_again_and_how_long_it_was_on_its_overlay()
    {
        var run = await _b.SnapshottedAsync();

        var line = await run.CommitAsync("vda", 0, TimeSpan.FromSeconds(5), _sink, CancellationToken.None);

        var seconds = run.Disks.Single(d => d.Target == "vda").TimeOnOverlay!.Value.TotalSeconds;
        Assert.Equal($"vda of {Domain} writes to {_b.Boot} again (Committed, {seconds:0.0} s on its overlay).", line);
        Assert.Null(run.Disks.Single(d => d.Target == "vdb").TimeOnOverlay); // not committed yet
    }

    // Kills BackupRun.Steps.cs:8 (StepPlan.Act's flags), :90, :91, :92, :93 (PlanCommit's branches).
    [Fact]
    public async Task Invoke_BlockCommit_asks_to_commit_each_disk_of_a_run_on_its_overlays()
    {
        var run = await _b.SnapshottedAsync();

        var plan = run.PlanCommit("vda");

        Assert.True(plan.Acts);
        Assert.False(plan.PassOn); // passed on only once committed
        Assert.Null(plan.Note);
        Assert.Equal($"vda of {Domain}", plan.Target);
        Assert.Equal($"Commit overlay '{BootOverlay}' into '{_b.Boot}' and pivot back to it (blockcommit --active --pivot)", plan.Action);
    }

    // Kills BackupRun.Steps.cs:10 (StepPlan.Skip's flags), :90, :91 (PlanCommit of a run given up).
    [Fact]
    public async Task Invoke_BlockCommit_does_nothing_for_a_run_given_up_and_does_not_pass_it_on()
    {
        var run = await _b.SnapshottedAsync();
        await run.FailAsync("the copy failed", _sink);

        var plan = run.PlanCommit("vda");

        Assert.False(plan.Acts);
        Assert.False(plan.PassOn);
        Assert.Equal($"vda of {Domain}: run {run.RunId} was given up; nothing to commit.", plan.Note);
    }

    // Kills BackupRun.Steps.cs:10, :92, :93 (PlanCommit of a cold backup).
    [Fact]
    public async Task Invoke_BlockCommit_passes_on_a_cold_backups_disk_without_committing()
    {
        _b.Host.State = "shut off";
        var run = _b.Begin(await _b.PlanAsync());

        var plan = run.PlanCommit("vdb");

        Assert.False(plan.Acts);
        Assert.True(plan.PassOn);
        Assert.Equal($"vdb of {Domain}: cold backup, nothing to commit.", plan.Note);
    }

    // ---------------------------------------------------------------- retention

    private RetentionBatch Batch(string folder) => new(new RetentionService(_b.Host.Virsh), folder);

    private async Task<BackupRun> CommittedAsync()
    {
        var run = await _b.SnapshottedAsync();
        foreach (var target in new[] { "vda", "vdb" })
            await run.CommitAsync(target, 0, TimeSpan.FromSeconds(5), _sink, CancellationToken.None);
        return run;
    }

    // Kills BackupRun.Steps.cs:140, :141, :142 x4, :143 (PlanRetention), and :8 (StepPlan.Act's flags).
    [Fact]
    public async Task Move_OverlayToRetention_asks_to_move_each_committed_overlay_into_the_runs_folder()
    {
        var run = await CommittedAsync();
        var retention = _b.Temp.Folder("retencao");

        var plan = run.PlanRetention("vda", Batch(retention));

        Assert.True(plan.Acts);
        Assert.False(plan.PassOn);
        Assert.Null(plan.Note);
        Assert.Equal(BootOverlay, plan.Target);
        Assert.Equal($"Move to '{Path.Combine(retention, Domain, run.RunId, Path.GetFileName(BootOverlay))}'", plan.Action);
    }

    // Kills BackupRun.Steps.cs:140, :141 and :10 (PlanRetention of a run given up).
    [Fact]
    public async Task Move_OverlayToRetention_does_nothing_for_a_run_given_up_and_does_not_pass_it_on()
    {
        var run = await _b.SnapshottedAsync();
        await run.FailAsync("the copy failed", _sink);

        var plan = run.PlanRetention("vda", Batch(_b.Temp.Folder("retencao")));

        Assert.False(plan.Acts);
        Assert.False(plan.PassOn);
    }

    // Kills BackupRun.Steps.cs:142, :143 and :10 (PlanRetention of a disk without an overlay: a cold backup).
    [Fact]
    public async Task Move_OverlayToRetention_passes_on_a_cold_backups_disk_without_moving_anything()
    {
        _b.Host.State = "shut off";
        var run = _b.Begin(await _b.PlanAsync());

        var plan = run.PlanRetention("vda", Batch(_b.Temp.Folder("retencao")));

        Assert.False(plan.Acts);
        Assert.True(plan.PassOn);
    }

    // Kills BackupRun.Steps.cs:155 (RecordRetained removed: the journal never learnt where the overlay went, and the
    // run never ended).
    [Fact]
    public async Task Retained_overlays_lie_in_the_runs_retention_folder_the_journal_says_where_and_the_run_ends_with_the_last()
    {
        var run = await CommittedAsync();
        var retention = _b.Temp.Folder("retencao");
        var batch = Batch(retention);
        var kept = Path.Combine(retention, Domain, run.RunId, Path.GetFileName(BootOverlay));

        await run.RetainAsync("vda", batch, CancellationToken.None);

        Assert.False(File.Exists(BootOverlay));
        Assert.Equal($"overlay of {_b.Boot}", File.ReadAllText(kept));
        var journal = RunJournal.TryLoad(Domain);
        Assert.NotNull(journal); // vdb's overlay is not retained yet
        Assert.Equal(BackupStage.Retained, journal.Disk("vda").State);
        Assert.Equal(kept, journal.Disk("vda").RetainedOverlay);

        await run.RetainAsync("vdb", batch, CancellationToken.None);

        Assert.True(File.Exists(Path.Combine(retention, Domain, run.RunId, Path.GetFileName(Bench.OverlayOf(_b.Data)))));
        Assert.Null(RunJournal.TryLoad(Domain)); // the run is over
        using var free = DomainLock.TryAcquire(Domain);
        Assert.NotNull(free);
    }

    // Kills BackupRun.Steps.cs:160 (the throw in RetainAsync's catch removed: a move the journal could not record
    // went unreported, and Repair-KvmBackup would look for the overlay where it no longer is).
    [Fact]
    public async Task An_overlay_moved_whose_journal_cannot_record_it_is_JournalWriteFailed_saying_where_it_went()
    {
        var run = await CommittedAsync();
        var retention = _b.Temp.Folder("retencao");
        var kept = Path.Combine(retention, Domain, run.RunId, Path.GetFileName(BootOverlay));
        _state.BreakJournalFolder();

        var ex = await Assert.ThrowsAsync<BackupException>(() => run.RetainAsync("vda", Batch(retention), CancellationToken.None));

        Assert.Equal(ErrorIds.JournalWriteFailed, ex.ErrorId);
        Assert.EndsWith($"The overlay of vda was moved to '{kept}'.", ex.Message, StringComparison.Ordinal);
        Assert.True(File.Exists(kept));
        Assert.False(File.Exists(BootOverlay));
    }

    // ---------------------------------------------------------------- New-KvmDiskSnapshot's notice

    private const string NoticeEnd = "writes to overlays until its disks are committed back: pipe these objects to Invoke-BlockCommit, or run Repair-KvmBackup -DomainName " + Domain + ".";

    // Kills BackupRun.Steps.cs:62 (OnOverlaysNotice's condition and its branches).
    [Fact]
    public async Task A_domain_left_on_its_overlays_is_told_with_the_way_out()
    {
        var run = await _b.SnapshottedAsync();

        Assert.Equal($"'{Domain}' {NoticeEnd}", run.OnOverlaysNotice);
    }

    [Fact]
    public async Task A_domain_whose_disks_were_all_committed_gets_no_notice()
    {
        var run = await CommittedAsync();

        Assert.Null(run.OnOverlaysNotice);
    }

    // The rollback's own message already named the disks still on overlays and Repair-KvmBackup.
    [Fact]
    public async Task A_run_given_up_whose_rollback_left_a_disk_on_its_overlay_gets_no_second_notice()
    {
        var run = await _b.SnapshottedAsync();
        _b.Host.OnBlockCommit = call => call.ValueOf("--path") == "vdb" ? Results.VirshError(IoError) : _b.Host.CommitAndPivot(call);
        var outcome = await run.FailAsync("the copy failed", _sink);
        Assert.False(outcome.BackOnOwnDisks, outcome.Message);
        Assert.True(run.OnOverlays);

        Assert.Null(run.OnOverlaysNotice);
    }

    // ---------------------------------------------------------------- snapshot

    // Kills BackupRun.Steps.cs:73 and :78 (SnapshotAsync's try and catch blocks removed).
    [Fact]
    public async Task A_snapshot_that_fails_after_libvirt_made_the_overlays_returns_its_error_and_the_rollbacks_outcome()
    {
        _b.Host.OnSnapshotCreate = call =>
        {
            _b.Host.TakeSnapshot(call);
            return Results.VirshError("error: internal error: unable to execute QEMU agent command 'guest-fsfreeze-thaw': couldn't hold writes: fsfreeze is limited up to 10 seconds\n");
        };
        var plan = await _b.PlanAsync();
        var run = _b.Begin(plan);

        var failure = await run.SnapshotAsync(plan, _sink, CancellationToken.None);

        Assert.NotNull(failure);
        Assert.Equal(ErrorIds.VssFreezeTimedOut, failure.Error.ErrorId);
        Assert.True(failure.Rollback.BackOnOwnDisks, failure.Rollback.Message);
        Assert.Contains("the snapshot step failed", failure.Rollback.Message, StringComparison.Ordinal);
        Assert.Equal([_b.Boot, _b.Data], _b.Host.Disks.Select(d => d.Source));
        Assert.True(run.Abandoned);
    }

    [Fact]
    public async Task A_snapshot_that_works_returns_no_failure_and_leaves_the_disks_on_their_overlays()
    {
        var plan = await _b.PlanAsync();
        var run = _b.Begin(plan);

        Assert.Null(await run.SnapshotAsync(plan, _sink, CancellationToken.None));

        Assert.Equal([BootOverlay, Bench.OverlayOf(_b.Data)], _b.Host.Disks.Select(d => d.Source));
        Assert.Equal(RunPhase.OnOverlays, run.Phase);
    }
}
