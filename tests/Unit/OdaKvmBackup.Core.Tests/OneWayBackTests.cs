using OdaKvmBackup.Core.Backup;
using OdaKvmBackup.Core.Processes;
using OdaKvmBackup.Core.Safety;
using OdaKvmBackup.Core.Storage;
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
        Assert.Equal(RunPhase.NeedsRepair, RunJournal.TryLoad(Domain)!.Phase);
        var byRun = await Bench.ManifestAsync(store, run);
        Assert.Equal(BackupSetStatus.Complete, run.SetStatus); // what the pipeline's objects show
        Assert.Equal(BackupSetStatus.Complete, byRun.Status);
        Assert.Null(byRun.Reason);

        var repaired = await RepairAsync();

        var byRepair = await Bench.ManifestAsync(store, run);
        Assert.Equal(byRun.Status, byRepair.Status);
        Assert.Null(byRepair.Reason);
        Assert.All(byRepair.Disks, d => Assert.True(d.Verified, d.Target));
        Assert.True(Files.SameBytes(_b.Boot, Path.Combine(store.Location, Domain, run.RunId, "oda_vm1_boot")));
        Assert.Contains(repaired, r => r.Contains("marked Complete", StringComparison.Ordinal));
        // And the run's own message says what its set is, not what it might be.
        var set = store.Describe(BackupNames.SetFolder(Domain, run.RunId));
        Assert.Contains($"The backup set '{set}' stays Complete", outcome.Message, StringComparison.Ordinal);
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
            run.RecordCopied(target, new CopyResult(1, 1, new string('c', 64)));
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
