using OdaKvmBackup.Core.Tests.Support;

namespace OdaKvmBackup.Core.Tests;

/// <summary>How a lease ends in cases that the Stryker run of the safety logic (build.ps1 -Task Mutate) found
/// untested; each test names the mutant it kills (docs/mutation-survivors.md).</summary>
[Collection(StateDirectoryCollection.Name)]
public sealed class LeaseEndTests : IDisposable
{
    private readonly Bench _b = new();
    private readonly List<string> _lines = new();
    private readonly StopSignals _signals = new((_, _) => new Nothing(), _ => { }, () => { }, _ => { });

    public LeaseEndTests(StateDirectoryFixture state)
    {
        state.Reset();
        _b.Host.OnBlockCommit = _b.Host.CommitAndPivot;
    }

    public void Dispose() => _b.Dispose();

    // Kills RunLease.cs:45 (RunPhase.Finished or RunPhase.Committed -> and) and BackupRun.Steps.cs:123 (RecordCommitted
    // removed; no coverage before): a pipeline that ends after every disk
    // was committed (New-KvmDiskSnapshot | Copy-VmDisk | Invoke-BlockCommit, without Move-OverlayToRetention)
    // leaves the VM as it is: its overlays stay for Move-OverlayToRetention or Repair-KvmBackup, nothing is
    // rolled back and no "Because the pipeline stopped" line is written.
    [Fact]
    public async Task A_lease_ended_after_every_disk_was_committed_rolls_nothing_back()
    {
        var run = await _b.SnapshottedAsync();
        using (run.Lease(new Lines(_lines), _signals))
        {
            foreach (var target in new[] { "vda", "vdb" })
                await run.CommitAsync(target, 0, TimeSpan.FromSeconds(5), NullSink.Instance, CancellationToken.None);
        }

        Assert.Empty(_lines);
        Assert.False(run.Abandoned);
        Assert.True(File.Exists(Bench.OverlayOf(_b.Boot)));
        Assert.True(File.Exists(Bench.OverlayOf(_b.Data)));
        Assert.NotNull(RunJournal.TryLoad(Bench.Domain)); // the overlays' only record, for Repair-KvmBackup
    }

    private sealed class Nothing : IDisposable
    {
        public void Dispose()
        {
        }
    }

    private sealed class Lines(List<string> lines) : IStopReport
    {
        public void Line(string message) => lines.Add(message);

        public void Verbose(string message)
        {
        }

        public void Warning(string message) => lines.Add(message);

        public void Progress(ProgressUpdate update)
        {
        }
    }
}
