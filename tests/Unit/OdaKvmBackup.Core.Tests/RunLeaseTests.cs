using OdaKvmBackup.Core.Tests.Support;

namespace OdaKvmBackup.Core.Tests;

/// <summary>The lease a command holds on a run, and the steps the run drives: a lease ended without being
/// completed puts the VM back and says so; a completed one lets go without touching the VM; a step that fails
/// returns its error and what became of the VM, for the command to write.</summary>
[Collection(StateDirectoryCollection.Name)]
public sealed class RunLeaseTests : IDisposable
{
    private readonly Bench _b = new();
    private readonly Report _report = new();
    private readonly List<int> _exits = new();
    private readonly StopSignals _signals;
    private readonly List<Action<System.Runtime.InteropServices.PosixSignalContext>> _handlers = new();

    public RunLeaseTests(StateDirectoryFixture state)
    {
        state.Reset();
        _b.Host.OnBlockCommit = _b.Host.CommitAndPivot;
        _signals = new StopSignals((_, handler) =>
        {
            lock (_handlers)
                _handlers.Add(handler);
            return new Registration();
        }, code =>
        {
            lock (_exits)
                _exits.Add(code);
        }, () => { }, _ => { });
    }

    public void Dispose() => _b.Dispose();

    private int Commits => _b.Host.Count(c => c.Is("virsh", "blockcommit"));

    [Fact]
    public async Task A_lease_ended_without_Complete_puts_the_VM_back_and_tells_the_host()
    {
        var run = await _b.SnapshottedAsync();

        using (run.Lease(_report, _signals))
        {
            Assert.True(_signals.Armed); // from the first lease on, a signal puts the run back too
        }

        Assert.Equal([_b.Boot, _b.Data], _b.Host.Disks.Select(d => d.Source));
        Assert.Null(RunJournal.TryLoad(Bench.Domain));
        Assert.Equal(RunLease.StoppedReason, run.Record.FailureReason);
        var line = Assert.Single(_report.Lines);
        Assert.StartsWith($"Because {RunLease.StoppedReason}, '{Bench.Domain}' was put back on its own disks (vda, vdb)", line, StringComparison.Ordinal);
        Assert.False(_signals.Armed); // the run is over: the signals are let go of
    }

    [Fact]
    public async Task A_completed_lease_lets_go_of_the_run_without_touching_the_VM()
    {
        var run = await _b.SnapshottedAsync();

        using (var lease = run.Lease(_report, _signals))
            lease.Complete();

        Assert.Equal(0, Commits);
        Assert.True(run.OnOverlays);
        Assert.Equal(RunPhase.OnOverlays, RunJournal.TryLoad(Bench.Domain)!.Phase); // Repair-KvmBackup can find it
        using (var other = DomainLock.TryAcquire(Bench.Domain))
            Assert.NotNull(other); // the lock is free for Repair-KvmBackup or a later pipeline
        Assert.Empty(_report.Lines);
        Assert.True(_signals.Armed); // still on its overlays: a signal would still put it back
    }

    [Fact]
    public async Task Only_the_first_lease_answers_for_the_run_and_the_next_one_after_it_ended()
    {
        var run = await _b.SnapshottedAsync();
        var first = run.Lease(_report, _signals);
        var second = run.Lease(_report, _signals);
        Assert.True(first.Holds);
        Assert.False(second.Holds);

        second.Dispose(); // a later command of the pipeline, stopped: its holder answers
        Assert.Equal(0, Commits);
        Assert.False(run.Abandoned);

        first.Complete();
        first.Dispose();
        using var third = run.Lease(_report, _signals); // a later pipeline picks the run up
        Assert.True(third.Holds);
    }

    [Fact]
    public async Task A_commit_that_fails_says_where_the_disk_writes_and_leaves_the_run_for_its_lease()
    {
        var run = await _b.SnapshottedAsync();
        _b.Host.OnBlockCommit = _ => Results.VirshError("error: internal error: unable to execute QEMU command 'block-commit': Could not reopen file: Input/output error\n");

        var ex = await Assert.ThrowsAsync<BackupException>(() =>
            run.CommitAsync("vda", 0, TimeSpan.FromSeconds(5), new RecordingSink(), CancellationToken.None));

        Assert.EndsWith($"'{Bench.Domain}' still writes to the overlay '{Bench.OverlayOf(_b.Boot)}' for vda.", ex.Message, StringComparison.Ordinal);
        Assert.NotNull(RunJournal.TryLoad(Bench.Domain)!.Disk("vda").CommitStartedUtc);
        Assert.False(run.Abandoned);
    }

    [Fact]
    public async Task A_copy_that_fails_gives_the_run_up_and_returns_the_error_and_the_rollback()
    {
        var run = await _b.SnapshottedAsync();
        var store = new InterceptingStore(_b.Temp.Folder("backups"))
        {
            WrapWriter = (_, _) => throw new IOException("Input/output error"),
        };
        var copy = new CopyService(_b.Tools, store, false, 0, 2, new RecordingSink());
        copy.Start(run, CancellationToken.None);

        var step = await copy.TakeAsync(run);

        Assert.Null(step.Copied);
        var failure = Assert.IsType<StepFailure>(step.Failure);
        Assert.Equal(ErrorIds.CopyFailed, failure.Error.ErrorId);
        Assert.EndsWith($"The backup of '{Bench.Domain}' is given up; other VMs go on.", failure.Error.Message, StringComparison.Ordinal);
        Assert.True(failure.Rollback.BackOnOwnDisks && failure.Rollback.Clean, failure.Rollback.Message);
        Assert.Null(failure.Rollback.AsError()); // all went back: a warning, not an error
        Assert.True(copy.Failed(run));
        Assert.Equal([_b.Boot, _b.Data], _b.Host.Disks.Select(d => d.Source));
        Assert.Equal(BackupSetStatus.Incomplete, (await Bench.ManifestAsync(store, run)).Status);
    }

    [Fact]
    public async Task A_step_that_fails_while_a_signal_stops_the_process_leaves_the_rollback_to_that_stop_without_waiting_for_it()
    {
        // The step's work is tracked as a command's is: the signal's stop waits for it to end before it puts the runs
        // back, so the step must not wait for that stop (it would wait for itself, until the rollback's bound).
        var run = await _b.SnapshottedAsync();
        run.Lease(_report, _signals); // not ended here: ending it waits for the signal's stop, as a command's does
        var go = new TaskCompletionSource(TaskCreationOptions.RunContinuationsAsynchronously);
        var step = Task.Run(async () =>
        {
            await go.Task;
            return await run.GiveUpAsync("copying a disk of 'oda_vm1' failed", new RecordingSink());
        });
        _signals.Track(step);
        _handlers.First()(new System.Runtime.InteropServices.PosixSignalContext(System.Runtime.InteropServices.PosixSignal.SIGTERM));
        go.SetResult();

        var outcome = await step.WaitAsync(TimeSpan.FromSeconds(20));

        Assert.Contains("signal", outcome.Message, StringComparison.Ordinal);
        // Not an error of its own (kills BackupRun.Steps.cs:56 Boolean x2): the signal's stop says how the rollback went.
        Assert.Null(outcome.AsError());
        for (var waited = 0; waited < 200 && _exits.Count == 0; waited++)
            await Task.Delay(100);
        Assert.Equal([143], _exits);
        Assert.Equal([_b.Boot, _b.Data], _b.Host.Disks.Select(d => d.Source)); // the signal's stop put it back
        Assert.Contains("SIGTERM", run.Record.FailureReason, StringComparison.Ordinal);
    }

    private sealed class Registration : IDisposable
    {
        public void Dispose()
        {
        }
    }

    private sealed class Report : IStopReport
    {
        public List<string> Lines { get; } = new();

        public void Line(string message)
        {
            lock (Lines)
                Lines.Add(message);
        }

        public void Verbose(string message)
        {
        }

        public void Warning(string message) => Line(message);

        public void Progress(ProgressUpdate update)
        {
        }
    }
}
