using OdaKvmBackup.Core.Tests.Support;

namespace OdaKvmBackup.Core.Tests;

/// <summary>The snapshot step (SnapshotService.SnapshotAsync) when what virsh answers and what the domain shows
/// afterwards disagree: the run goes on only with every disk on its planned overlay, and otherwise fails with an
/// id while its journal says the disks may be on overlays, so that the way back looks.</summary>
[Collection(StateDirectoryCollection.Name)]
public sealed class SnapshotServiceSnapshotTests : IDisposable
{
    private const string Domain = Bench.Domain;
    // What virsh prints when libvirtd is restarted (or dies) while it waits for the answer.
    private const string Disconnected = "error: Disconnected from qemu:///system due to end of file\nerror: End of file while reading data: Input/output error\n";
    private readonly Bench _b = new();
    private readonly RecordingSink _sink = new();

    public SnapshotServiceSnapshotTests(StateDirectoryFixture state)
    {
        state.Reset();
        _b.Host.OnBlockCommit = _b.Host.CommitAndPivot;
    }

    public void Dispose() => _b.Dispose();

    private SnapshotService Service => new(_b.Tools);

    private static RunRecord Journal() => RunJournal.TryLoad(Domain) ?? throw new Xunit.Sdk.XunitException($"'{Domain}' has no journal");

    private void AssertBackOnOwnDisks()
    {
        Assert.Equal([_b.Boot, _b.Data], _b.Host.Disks.Select(d => d.Source));
        Assert.All(_b.Host.Disks, d => Assert.Null(d.Backing));
    }

    private void AssertOverlaysGone()
    {
        Assert.False(File.Exists(Bench.OverlayOf(_b.Boot)), "the overlay of vda was left");
        Assert.False(File.Exists(Bench.OverlayOf(_b.Data)), "the overlay of vdb was left");
    }

    [Fact]
    public async Task Snapshot_whose_metadata_cannot_be_deleted_is_SnapshotFailed_and_the_rollback_puts_the_VM_back_and_deletes_it()
    {
        var refused = false;
        _b.Host.OnSnapshotDelete = _ =>
        {
            if (refused)
                return null; // the rollback's try works
            refused = true;
            return Results.VirshError("error: Failed to delete snapshot FILE_STAGE_BACKUP.TEMP\nerror: Failed to remove snapshot metadata '/var/lib/libvirt/qemu/snapshot/oda_vm1/FILE_STAGE_BACKUP.TEMP.xml': Read-only file system\n");
        };
        var plan = await _b.PlanAsync();
        var run = _b.Begin(plan);

        var ex = await Assert.ThrowsAsync<BackupException>(() => Service.SnapshotAsync(run, plan, CancellationToken.None));

        Assert.Equal(ErrorIds.SnapshotFailed, ex.ErrorId);
        Assert.Equal(Domain, ex.Target);
        Assert.Contains("was taken but its metadata could not be deleted", ex.Message, StringComparison.Ordinal);
        Assert.Contains("Read-only file system", ex.Message, StringComparison.Ordinal);
        Assert.Contains($"Repair-KvmBackup -DomainName {Domain}", ex.RecommendedAction, StringComparison.Ordinal);
        // The snapshot was taken: the journal says the disks write to their overlays.
        Assert.Equal(RunPhase.OnOverlays, Journal().Phase);
        Assert.All(Journal().Disks, d => Assert.Equal(BackupStage.Snapshotted, d.State));

        var outcome = await run.FailAsync("the snapshot step failed", _sink);

        Assert.True(outcome.Clean, outcome.Message);
        AssertBackOnOwnDisks();
        Assert.Empty(_b.Host.Snapshots);
        AssertOverlaysGone();
        Assert.Null(RunJournal.TryLoad(Domain));
    }

    [Fact]
    public async Task Snapshot_that_virsh_reports_as_created_with_a_disk_not_on_its_planned_overlay_is_SnapshotFailed_and_the_rollback_puts_the_VM_back()
    {
        // libvirt says "created" but vdb did not move to its overlay.
        _b.Host.OnSnapshotCreate = call =>
        {
            var args = call.Args.ToList();
            var vdb = args.FindIndex(a => a.StartsWith("vdb,", StringComparison.Ordinal));
            args.RemoveRange(vdb - 1, 2);
            return _b.Host.TakeSnapshot(call with { Args = args });
        };
        var plan = await _b.PlanAsync();
        var run = _b.Begin(plan);

        var ex = await Assert.ThrowsAsync<BackupException>(() => Service.SnapshotAsync(run, plan, CancellationToken.None));

        Assert.Equal(ErrorIds.SnapshotFailed, ex.ErrorId);
        Assert.Contains("do not write to the planned overlays", ex.Message, StringComparison.Ordinal);
        Assert.Contains($"virsh domblklist {Domain} --details", ex.RecommendedAction, StringComparison.Ordinal);
        Assert.Equal(Bench.OverlayOf(_b.Boot), _b.Host.Disk("vda").Source); // vda did move: there is something to undo
        Assert.Equal(RunPhase.OnOverlays, Journal().Phase);

        var outcome = await run.FailAsync("the snapshot step failed", _sink);

        Assert.True(outcome.Clean, outcome.Message);
        AssertBackOnOwnDisks();
        AssertOverlaysGone();
        Assert.Null(RunJournal.TryLoad(Domain));
    }

    [Fact]
    public async Task Libvirtd_that_goes_away_after_taking_the_snapshot_leaves_the_run_on_its_overlays_as_if_virsh_had_answered()
    {
        _b.Host.OnSnapshotCreate = call =>
        {
            _b.Host.TakeSnapshot(call);
            return Results.VirshError(Disconnected);
        };
        var plan = await _b.PlanAsync();
        var run = _b.Begin(plan);

        await Service.SnapshotAsync(run, plan, CancellationToken.None);

        Assert.True(run.OnOverlays);
        Assert.Equal([Bench.OverlayOf(_b.Boot), Bench.OverlayOf(_b.Data)], _b.Host.Disks.Select(d => d.Source));
        Assert.Equal(RunPhase.OnOverlays, Journal().Phase);
        Assert.NotNull(Journal().SnapshotUtc);
        Assert.Empty(_b.Host.Snapshots); // its metadata deleted, as after any snapshot
    }

    [Fact]
    public async Task Libvirtd_that_goes_away_before_taking_the_snapshot_is_LibvirtUnreachable_and_the_rollback_has_nothing_to_undo()
    {
        _b.Host.OnSnapshotCreate = _ => Results.VirshError(Disconnected);
        var plan = await _b.PlanAsync();
        var run = _b.Begin(plan);

        var ex = await Assert.ThrowsAsync<Host.VirshException>(() => Service.SnapshotAsync(run, plan, CancellationToken.None));

        Assert.Equal(ErrorIds.LibvirtUnreachable, ex.ErrorId);
        // Whether libvirtd took it is not known from the call: the journal keeps saying it may have.
        Assert.Equal(RunPhase.Snapshotting, Journal().Phase);
        Assert.DoesNotContain(_b.Host.Calls, c => c.Command == "snapshot-delete");

        var outcome = await run.FailAsync("the snapshot step failed", _sink);

        Assert.True(outcome.Clean, outcome.Message);
        AssertBackOnOwnDisks();
        Assert.DoesNotContain(_b.Host.Calls, c => c.Command is "blockcommit" or "snapshot-delete");
        Assert.True(File.Exists(_b.Boot) && File.Exists(_b.Data));
        Assert.Null(RunJournal.TryLoad(Domain));
    }
}
