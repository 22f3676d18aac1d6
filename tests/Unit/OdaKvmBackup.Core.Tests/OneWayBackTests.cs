using OdaKvmBackup.Core.Tests.Support;

namespace OdaKvmBackup.Core.Tests;

/// <summary>The two ways a run is closed, by the run that fails (BackupRun.FailAsync) and later by Repair-KvmBackup
/// (RepairService), leave its backup set with the same status: what the user was told first stays true.</summary>
[Collection(StateDirectoryCollection.Name)]
public sealed class OneWayBackTests : IDisposable
{
    private const string Domain = Bench.Domain;
    private const string Snap = Bench.Snap;
    private const string IoError = "error: internal error: unable to execute QEMU command 'block-commit': Could not reopen file: Input/output error\n";
    private readonly Bench _b = new();
    private readonly RecordingSink _sink = new();

    public OneWayBackTests(StateDirectoryFixture state)
    {
        state.Reset();
        _b.Host.OnBlockCommit = _b.Host.CommitAndPivot;
    }

    public void Dispose() => _b.Dispose();

    private RepairService Repair() => _b.Repair();

    /// <summary>Repair-KvmBackup -DomainName oda_vm1, once the host lets the commit work again: what it says it did.</summary>
    private async Task<IReadOnlyList<string>> RepairAsync()
    {
        _b.Host.OnBlockCommit = _b.Host.CommitAndPivot;
        var findings = await Repair().InspectAsync(Domain, Snap, CancellationToken.None);
        var results = new List<string>();
        foreach (var decision in RepairService.Decide(findings, includeUnrecorded: false))
        {
            Assert.True(decision.Act, decision.LeftAloneWarning);
            results.Add(await Repair().FixAsync(decision.Finding, Snap, null, null, CancellationToken.None));
        }
        Assert.Equal([_b.Boot, _b.Data], _b.Host.Disks.Select(d => d.Source));
        Assert.Null(RunJournal.TryLoad(Domain));
        return results;
    }

    [Fact]
    public async Task Run_stopped_after_every_copy_was_verified_whose_rollback_commit_fails_and_Repair_later_report_the_same_Complete_set()
    {
        var run = await _b.SnapshottedAsync();
        var store = new LocalBackupStore(_b.Temp.Folder("backups"));
        Assert.Empty(await _b.CopyAllAsync(run, store));
        _b.Host.OnBlockCommit = _ => Results.VirshError(IoError); // the rollback's commit fails: the run needs a repair

        var outcome = await run.FailAsync("the process was stopped by a signal", _sink);

        Assert.False(outcome.Clean, outcome.Message);
        Assert.False(outcome.BackOnOwnDisks, outcome.Message);
        Assert.Equal(RunPhase.NeedsRepair, RunJournal.TryLoad(Domain)!.Phase);
        var byRun = await Bench.ManifestAsync(store, run);
        var filesByRun = SetFiles(store, run);
        Assert.Equal(BackupSetStatus.Complete, run.SetStatus); // what the pipeline's objects show
        Assert.Equal(BackupSetStatus.Complete, byRun.Status);
        Assert.Null(byRun.Reason);

        var repaired = await RepairAsync();

        var byRepair = await Bench.ManifestAsync(store, run);
        Assert.Equal(byRun.Status, byRepair.Status);
        Assert.Null(byRepair.Reason);
        Assert.All(byRepair.Disks, d => Assert.True(d.Verified, d.Target));
        Assert.Equal(filesByRun, SetFiles(store, run)); // a Complete set loses no file to the closing
        Assert.True(Files.SameBytes(_b.Boot, Path.Combine(store.Location, Domain, run.RunId, "oda_vm1_boot")));
        Assert.Contains(repaired, r => r.Contains("marked Complete", StringComparison.Ordinal));
        // And the run's own message says what its set is, not what it might be.
        var set = store.Describe(BackupNames.SetFolder(Domain, run.RunId));
        Assert.Contains($"The backup set '{set}' stays Complete", outcome.Message, StringComparison.Ordinal);
    }

    private static List<string> SetFiles(LocalBackupStore store, BackupRun run) =>
        Directory.GetFiles(Path.Combine(store.Location, BackupNames.SetFolder(run.DomainName, run.RunId))).Select(Path.GetFileName).OfType<string>()
            .Order(StringComparer.Ordinal).ToList();

    /// <summary>The destination did not answer while the run was put back, so the run could not close its set; a later
    /// Repair-KvmBackup closes it the way the run would have: Incomplete, for the run's own reason, its partial copy
    /// gone, its verified copy and every file that is not the run's kept.</summary>
    [Fact]
    public async Task Set_the_run_could_not_mark_is_closed_by_Repair_by_the_same_rule_and_loses_only_the_runs_partial_copies()
    {
        var run = await _b.SnapshottedAsync();
        var store = new InterceptingStore(_b.Temp.Folder("backups"));
        var set = await run.EnsureSetAsync(store, false, CancellationToken.None);
        run.BeginCopy("vda", store);
        run.RecordCopied("vda", CopyResults.Of(1, 1), CopyService.StoredAsFull, 0);
        await run.RecordVerifiedAsync("vda", "test", CancellationToken.None);
        var vda = run.Record.Disk("vda").SetFile;
        File.WriteAllText(Path.Combine(store.Location, set, vda), "vda's copy");
        run.BeginCopy("vdb", store);
        run.CopyAbandoned("vdb"); // stopped while vdb was being copied
        var partial = BackupNames.Partial(run.Record.Disk("vdb").SetFile);
        File.WriteAllText(Path.Combine(store.Location, set, partial), "half of vdb");
        File.WriteAllText(Path.Combine(store.Location, set, "notes.partial"), "not the run's");
        store.BeforeList = _ => throw new BackupException(ErrorIds.StorageFailed, BackupErrorCategory.ConnectionError,
            "The destination did not answer: Connection reset by peer.");

        var outcome = await run.FailAsync("the process was stopped by a signal", _sink);

        Assert.True(outcome.BackOnOwnDisks, outcome.Message);
        Assert.False(outcome.Clean, outcome.Message);
        Assert.Contains($"the backup set could not be marked Incomplete (The destination did not answer: Connection reset by peer.); Repair-KvmBackup -DomainName {Domain} marks it once the destination answers", outcome.Message, StringComparison.Ordinal);
        Assert.Equal(BackupSetStatus.InProgress, (await Bench.ManifestAsync(store, run)).Status);
        Assert.True(File.Exists(Path.Combine(store.Location, set, partial)));
        Assert.Equal(RunPhase.NeedsRepair, RunJournal.TryLoad(Domain)!.Phase);
        store.BeforeList = null;

        var repaired = await RepairAsync();

        var byRepair = await Bench.ManifestAsync(store, run);
        Assert.Equal(BackupSetStatus.Incomplete, run.SetStatus); // what the run's objects said
        Assert.Equal(BackupSetStatus.Incomplete, byRepair.Status);
        Assert.Contains("the process was stopped by a signal", byRepair.Reason, StringComparison.Ordinal);
        Assert.Contains(repaired, r => r.EndsWith($"set {store.Describe(set)} marked Incomplete", StringComparison.Ordinal));
        Assert.Equal(["backup.json", "domain.xml", "notes.partial", vda], Directory.GetFiles(Path.Combine(store.Location, set))
            .Select(Path.GetFileName).Order(StringComparer.Ordinal));
    }

    /// <summary>A set its owner removed before Repair-KvmBackup closes the run is not made again: there is nothing
    /// to mark, and the journal goes all the same.</summary>
    [Fact]
    public async Task Set_removed_before_Repair_closes_its_run_is_not_made_again()
    {
        var run = await _b.SnapshottedAsync();
        var store = new LocalBackupStore(_b.Temp.Folder("backups"));
        var set = await run.EnsureSetAsync(store, false, CancellationToken.None);
        run.Release(); // killed while copying
        Directory.Delete(Path.Combine(store.Location, set), recursive: true);

        var repaired = await RepairAsync();

        Assert.Equal("journal closed", repaired[^1]);
        Assert.False(Directory.Exists(Path.Combine(store.Location, set)));
    }

    // Mutation testing of RunCloser (the rule of which disks go back, the rollback's progress, the reason an Incomplete
    // set keeps, and what the user is told of a run without a set): each survived against the tests before these.

    [Fact]
    public async Task Disk_committed_before_the_run_failed_is_not_committed_again_and_keeps_its_state()
    {
        var run = await _b.SnapshottedAsync();
        await new CommitService(_b.Host.Virsh, _b.Host.QemuImg, NullSink.Instance)
            .CommitAsync(new CommitTarget(Domain, "vda", _b.Boot, "raw", Bench.OverlayOf(_b.Boot)), 0, null, CancellationToken.None);
        run.BeginCommit("vda");
        run.RecordCommitted("vda");

        var outcome = await run.FailAsync("the pipeline stopped", _sink);

        Assert.True(outcome.Clean, outcome.Message);
        Assert.Equal([BackupStage.Committed, BackupStage.RolledBack], run.Record.Disks.Select(d => d.State));
        Assert.Equal(["vdb"], _sink.Progress.Where(p => p.Status.Contains(": committing", StringComparison.Ordinal)).Select(p => p.Status[..3]));
        Assert.Equal(1, _b.Host.Count(c => c.Is("virsh", "blockcommit") && c.ValueOf("--path") == "vda"));
        Assert.False(File.Exists(Bench.OverlayOf(_b.Boot)) || File.Exists(Bench.OverlayOf(_b.Data)));
    }

    [Fact]
    public async Task Rollback_of_two_disks_shows_each_disks_commit_at_its_share_of_the_bar_then_done()
    {
        var run = await _b.SnapshottedAsync();

        await run.FailAsync("the pipeline stopped", _sink);

        var rollback = _sink.Progress.Where(p => p.Id == ProgressIds.Rollback).ToList();
        Assert.Equal([("vda", 0), ("vdb", 50)], rollback.Where(p => p.Status.Contains(": committing", StringComparison.Ordinal))
            .Select(p => (p.Status[..3], p.PercentComplete)));
        Assert.Equal(($"Putting {Domain} back on its own disks", "Done", 100, true),
            (rollback[^1].Activity, rollback[^1].Status, rollback[^1].PercentComplete, rollback[^1].Completed));
    }

    [Fact]
    public async Task Set_marked_Incomplete_by_a_failed_check_keeps_that_reason_through_a_later_stop_and_Repair()
    {
        var run = await _b.SnapshottedAsync();
        var store = new LocalBackupStore(_b.Temp.Folder("backups"));
        await run.EnsureSetAsync(store, false, CancellationToken.None);
        await run.MarkSetIncompleteAsync("the copy of vdb did not match its source", CancellationToken.None);
        _b.Host.OnBlockCommit = _ => Results.VirshError(IoError);
        await run.FailAsync("the process was stopped by a signal", _sink);
        Assert.Equal("the copy of vdb did not match its source", (await Bench.ManifestAsync(store, run)).Reason);

        await RepairAsync();

        Assert.Equal($"run {run.RunId} was interrupted (the copy of vdb did not match its source); closed by Repair-KvmBackup",
            (await Bench.ManifestAsync(store, run)).Reason);
    }

    [Fact]
    public async Task Set_of_a_run_killed_during_its_rollback_is_closed_by_Repair_for_the_runs_reason()
    {
        var run = await _b.SnapshottedAsync();
        var store = new LocalBackupStore(_b.Temp.Folder("backups"));
        await run.EnsureSetAsync(store, false, CancellationToken.None);
        run.Release();
        // What the journal says once the rollback wrote its reason and was killed before it marked the set.
        var journal = RunJournal.TryLoad(Domain)!;
        journal.FailureReason = "the process was stopped by a signal";
        journal.Phase = RunPhase.RollingBack;
        RunJournal.Save(journal);

        await RepairAsync();

        Assert.Equal($"run {run.RunId} was interrupted (the process was stopped by a signal); closed by Repair-KvmBackup",
            (await Bench.ManifestAsync(store, run)).Reason);
    }

    [Fact]
    public async Task Set_of_a_run_killed_without_a_reason_is_closed_by_Repair_saying_only_that_it_was_interrupted()
    {
        var run = await _b.SnapshottedAsync();
        var store = new LocalBackupStore(_b.Temp.Folder("backups"));
        await run.EnsureSetAsync(store, false, CancellationToken.None);
        run.Release(); // killed while copying

        await RepairAsync();

        Assert.Equal($"run {run.RunId} was interrupted; closed by Repair-KvmBackup", (await Bench.ManifestAsync(store, run)).Reason);
    }

    [Fact]
    public async Task Run_given_up_before_it_made_a_set_says_nothing_of_a_set()
    {
        var run = await _b.SnapshottedAsync();

        var outcome = await run.FailAsync("the pipeline stopped", _sink);

        Assert.Equal($"Because the pipeline stopped, '{Domain}' was put back on its own disks (vda, vdb) and the run's overlays were removed.", outcome.Message);
    }

    [Fact]
    public async Task Run_that_marked_its_set_Incomplete_before_the_last_check_passed_and_Repair_later_report_the_same_Incomplete_set()
    {
        var run = await _b.SnapshottedAsync();
        var store = new LocalBackupStore(_b.Temp.Folder("backups"));
        await run.EnsureSetAsync(store, false, CancellationToken.None);
        foreach (var target in new[] { "vda", "vdb" })
        {
            run.BeginCopy(target, store);
            run.RecordCopied(target, CopyResults.Of(1, 1), CopyService.StoredAsFull, 0);
        }
        await run.RecordVerifiedAsync("vda", "test", CancellationToken.None);
        _b.Host.OnBlockCommit = _ => Results.VirshError(IoError);

        // Stopped while vdb's copy was being read back; that check passes once the set was marked Incomplete.
        var outcome = await run.FailAsync("the process was stopped by a signal", _sink);
        await run.RecordVerifiedAsync("vdb", "test", CancellationToken.None);

        Assert.False(outcome.Clean, outcome.Message);
        var byRun = await Bench.ManifestAsync(store, run);
        Assert.Equal(BackupSetStatus.Incomplete, run.SetStatus);
        Assert.Equal(BackupSetStatus.Incomplete, byRun.Status);

        await RepairAsync();

        var byRepair = await Bench.ManifestAsync(store, run);
        Assert.Equal(byRun.Status, byRepair.Status);
        Assert.Contains("stopped by a signal", byRepair.Reason, StringComparison.Ordinal);
    }
}
