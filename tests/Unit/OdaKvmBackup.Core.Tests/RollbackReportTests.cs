using OdaKvmBackup.Core.Tests.Support;

namespace OdaKvmBackup.Core.Tests;

/// <summary>What the way back tells the user (its progress bar, its closing sentence) in cases that the Stryker run
/// of the safety logic (build.ps1 -Task Mutate) found untested; each test names the mutant it kills
/// (docs/mutation-survivors.md).</summary>
[Collection(StateDirectoryCollection.Name)]
public sealed class RollbackReportTests : IDisposable
{
    private readonly Bench _b = new();

    public RollbackReportTests(StateDirectoryFixture state)
    {
        state.Reset();
        _b.Host.OnBlockCommit = _b.Host.CommitAndPivot;
    }

    public void Dispose() => _b.Dispose();

    // Kills RunCloser.cs:68 (i * 100 -> i / 100) and RunCloser.cs:73 ((done + p) -> (done - p)): the rollback's
    // progress bar (Write-Progress, which refuses a percentage outside 0..100) goes from 0 to 100 over both disks.
    [Fact]
    public async Task The_rollbacks_progress_goes_from_0_to_100_over_the_disks()
    {
        var run = await _b.SnapshottedAsync();
        var sink = new RecordingSink();

        await run.FailAsync("the test stopped it", sink);

        var rollback = sink.Progress.Where(p => p.Id == ProgressIds.Rollback).ToList();
        Assert.All(rollback, p => Assert.InRange(p.PercentComplete, 0, 100));
        Assert.Equal(rollback.Select(p => p.PercentComplete).Order(), rollback.Select(p => p.PercentComplete));
        Assert.Equal(50, rollback.First(p => p.Status.StartsWith("vdb: committing", StringComparison.Ordinal)).PercentComplete);
        Assert.Equal(100, rollback[^1].PercentComplete);
    }

    // Kills RunCloser.cs:222 (problems.Count > 0 -> >= 0, and -> true): a run given up before its snapshot, with
    // nothing left behind, says so without sending the user to Repair-KvmBackup for nothing.
    [Fact]
    public async Task A_run_given_up_before_its_snapshot_with_nothing_left_sends_nobody_to_Repair()
    {
        var run = _b.Begin(await _b.PlanAsync());

        var outcome = await run.FailAsync("the test stopped it", NullSink.Instance);

        Assert.Equal($"Because the test stopped it, the backup of '{Bench.Domain}' was stopped; its disks were never on overlays.", outcome.Message);
        Assert.True(outcome.BackOnOwnDisks);
        Assert.True(outcome.Clean);
        Assert.Null(RunJournal.TryLoad(Bench.Domain));
    }
}
