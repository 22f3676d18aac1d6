using System.Runtime.InteropServices;
using OdaKvmBackup.Core.Tests.Support;

namespace OdaKvmBackup.Core.Tests;

/// <summary>StopSignals against a FakeHost, signals raised through a fake registration and the exit recorded:
/// what a user gets from SIGTERM or SIGHUP during a backup is the VM on its own disks, one rollback, a line that
/// names the signal, and one exit with 128 + its number; later signals are answered, never obeyed.</summary>
[Collection(StateDirectoryCollection.Name)]
public sealed class StopSignalsTests : IDisposable
{
    private static readonly TimeSpan Bound = TimeSpan.FromSeconds(20);
    private readonly Bench _b = new();
    private readonly FakeSignals _signals = new();
    private readonly List<int> _exits = new();
    private readonly TaskCompletionSource<int> _exited = new(TaskCreationOptions.RunContinuationsAsynchronously);
    private readonly RecordingReport _report = new();
    private int _hangUps;
    private readonly List<bool> _armed = new();
    private readonly StopSignals _stop;

    public StopSignalsTests(StateDirectoryFixture state)
    {
        state.Reset();
        _b.Host.OnBlockCommit = _b.Host.CommitAndPivot;
        _stop = new StopSignals(_signals.Register, code =>
        {
            lock (_exits)
                _exits.Add(code);
            _exited.TrySetResult(code);
        }, () => Interlocked.Increment(ref _hangUps), armed =>
        {
            lock (_armed)
                _armed.Add(armed);
        });
    }

    public void Dispose() => _b.Dispose();

    private int Commits(string target) => _b.Host.Count(c => c.Is("virsh", "blockcommit") && c.ValueOf("--path") == target);

    private void AssertBackOnOwnDisks()
    {
        Assert.Equal([_b.Boot, _b.Data], _b.Host.Disks.Select(d => d.Source));
        Assert.All(_b.Host.Disks, d => Assert.Null(d.Backing));
        Assert.Null(RunJournal.TryLoad(Bench.Domain));
    }

    private async Task<BackupRun> ActiveRunAsync()
    {
        var run = await _b.SnapshottedAsync();
        _stop.Add(run);
        return run;
    }

    [Fact]
    public async Task Signals_are_handled_only_while_a_run_is_active()
    {
        Assert.False(_stop.Armed);
        Assert.Empty(_signals.Active);

        var run = await ActiveRunAsync();
        Assert.Equal([PosixSignal.SIGTERM, PosixSignal.SIGHUP], _signals.Active.Select(r => r.Signal));

        _stop.Forget(run); // let go by its pipeline but still on its overlays (held for a later statement)
        Assert.True(_stop.Armed);

        await run.FailAsync("the test gave it up", NullSink.Instance);
        _stop.Forget(run);
        Assert.False(_stop.Armed);
        Assert.Empty(_signals.Active);
        Assert.Equal([true, false], _armed); // the console is guarded for as long, no longer
    }

    [Fact]
    public async Task SIGTERM_cancels_the_work_puts_the_run_back_once_says_so_and_exits_143()
    {
        var run = await ActiveRunAsync();
        using var work = new CancellationTokenSource();
        _stop.Enlist(work, _report);

        var context = _signals.Raise(PosixSignal.SIGTERM);

        Assert.True(context.Cancel, "the runtime must not end the process before the VM is back");
        Assert.True(work.IsCancellationRequested, "the work under way stops, as after Ctrl+C");
        Assert.Equal(143, await _exited.Task.WaitAsync(Bound));
        AssertBackOnOwnDisks();
        Assert.Equal(1, Commits("vda"));
        Assert.Equal(1, Commits("vdb"));
        Assert.Equal([143], _exits);
        var lines = _report.Lines;
        Assert.StartsWith("SIGTERM received: the backup stops as after Ctrl+C. Putting 'oda_vm1' back on its own disks first, then pwsh exits with code 143", lines[0], StringComparison.Ordinal);
        Assert.Contains(lines, l => l.StartsWith("Because the process received SIGTERM", StringComparison.Ordinal) && l.Contains("'oda_vm1' was put back on its own disks (vda, vdb)", StringComparison.Ordinal));
        Assert.Equal("Exiting with code 143 (SIGTERM).", lines[^1]);
        Assert.Contains("SIGTERM", run.Record.FailureReason, StringComparison.Ordinal);
        Assert.Contains(_report.Progress, p => p.Id == ProgressIds.Rollback && p.Completed);
        Assert.Equal(0, _hangUps); // the terminal is still there
    }

    [Fact]
    public async Task SIGHUP_exits_129_and_the_run_records_that_its_terminal_or_session_closed()
    {
        var run = await ActiveRunAsync();
        _stop.Enlist(new CancellationTokenSource(), _report);

        Assert.True(_signals.Raise(PosixSignal.SIGHUP).Cancel);

        Assert.Equal(129, await _exited.Task.WaitAsync(Bound));
        AssertBackOnOwnDisks();
        Assert.Equal("the process received SIGHUP (its terminal or SSH session closed)", run.Record.FailureReason);
        Assert.Equal("Exiting with code 129 (SIGHUP).", _report.Lines[^1]);
        Assert.Equal(1, _hangUps); // the terminal that hung up is let go of, so that pwsh never dies writing to it
    }

    [Fact]
    public async Task Later_signals_during_the_rollback_do_not_cut_it_short_and_say_so()
    {
        var committing = new TaskCompletionSource(TaskCreationOptions.RunContinuationsAsynchronously);
        var release = new TaskCompletionSource(TaskCreationOptions.RunContinuationsAsynchronously);
        var tokens = new List<CancellationToken>();
        var run = await ActiveRunAsync();
        _b.Host.OnBlockCommitAsync = async (call, ct) =>
        {
            lock (tokens)
                tokens.Add(ct);
            committing.TrySetResult();
            await release.Task.WaitAsync(ct);
            return _b.Host.CommitAndPivot(call);
        };
        _stop.Enlist(new CancellationTokenSource(), _report);

        _signals.Raise(PosixSignal.SIGTERM);
        await committing.Task.WaitAsync(Bound);
        var again = _signals.Raise(PosixSignal.SIGTERM);
        var hangUp = _signals.Raise(PosixSignal.SIGHUP);

        Assert.True(again.Cancel);
        Assert.True(hangUp.Cancel);
        Assert.Equal(1, _hangUps);
        Assert.Contains(_report.Lines, l => l.StartsWith("SIGTERM received again: putting 'oda_vm1' back on its own disks is finishing and will not be interrupted", StringComparison.Ordinal));
        Assert.Contains(_report.Lines, l => l.StartsWith("SIGHUP received: putting 'oda_vm1' back on its own disks is finishing and will not be interrupted", StringComparison.Ordinal));
        Assert.Empty(_exits);
        lock (tokens)
            Assert.All(tokens, t => Assert.False(t.IsCancellationRequested, "a later signal cancelled the rollback's commit"));

        release.SetResult();
        Assert.Equal(143, await _exited.Task.WaitAsync(Bound));
        AssertBackOnOwnDisks();
        Assert.Equal(1, Commits("vda"));
        Assert.Equal(1, Commits("vdb"));
        Assert.Equal([143], _exits);
        Assert.Contains("SIGTERM", run.Record.FailureReason, StringComparison.Ordinal);
    }

    [Fact]
    public async Task Work_under_way_ends_before_the_rollback_begins()
    {
        // A snapshot libvirtd is still taking, say: committing meanwhile could leave the VM on its overlays.
        await ActiveRunAsync();
        var snapshot = new TaskCompletionSource(TaskCreationOptions.RunContinuationsAsynchronously);
        _stop.Track(snapshot.Task);

        _signals.Raise(PosixSignal.SIGTERM);
        await Task.Delay(300);
        Assert.Equal(0, Commits("vda") + Commits("vdb"));
        Assert.Empty(_exits);

        snapshot.SetResult();
        Assert.Equal(143, await _exited.Task.WaitAsync(Bound));
        AssertBackOnOwnDisks();
    }

    [Fact]
    public async Task A_run_begun_while_the_stop_waits_for_the_work_is_put_back_too()
    {
        var snapshot = new TaskCompletionSource(TaskCreationOptions.RunContinuationsAsynchronously);
        _stop.Track(snapshot.Task);
        var run = await _b.SnapshottedAsync();
        _stop.Add(run);
        var second = _b.Host.Calls.Count;
        _signals.Raise(PosixSignal.SIGTERM);
        Assert.Equal(second, _b.Host.Calls.Count);

        snapshot.SetResult();

        Assert.Equal(143, await _exited.Task.WaitAsync(Bound));
        AssertBackOnOwnDisks();
    }

    [Fact]
    public async Task The_pipelines_own_rollback_and_the_signals_are_one_rollback()
    {
        // Ctrl+C (or a failed copy) began putting the run back; SIGTERM comes meanwhile.
        var release = new TaskCompletionSource(TaskCreationOptions.RunContinuationsAsynchronously);
        var committing = new TaskCompletionSource(TaskCreationOptions.RunContinuationsAsynchronously);
        var run = await ActiveRunAsync();
        _b.Host.OnBlockCommitAsync = async (call, ct) =>
        {
            committing.TrySetResult();
            await release.Task.WaitAsync(ct);
            return _b.Host.CommitAndPivot(call);
        };
        var pipeline = run.FailAsync("the pipeline stopped before the backup finished", new RecordingSink());
        await committing.Task.WaitAsync(Bound);
        _stop.Enlist(new CancellationTokenSource(), _report);

        _signals.Raise(PosixSignal.SIGTERM);
        await Task.Delay(300); // time for a second rollback to begin, were there one
        release.SetResult();

        Assert.Equal(143, await _exited.Task.WaitAsync(Bound));
        var outcome = await pipeline.WaitAsync(Bound);
        Assert.True(outcome.Clean, outcome.Message);
        Assert.Equal(1, Commits("vda"));
        Assert.Equal(1, Commits("vdb"));
        AssertBackOnOwnDisks();
        Assert.Contains(_report.Lines, l => l == outcome.Message);
    }

    [Fact]
    public async Task A_terminal_that_is_gone_does_not_stop_the_rollback()
    {
        // After SIGHUP every write to the terminal fails (EIO); the VM goes back all the same.
        await ActiveRunAsync();
        var broken = new RecordingReport { Fails = true };
        _stop.Enlist(new CancellationTokenSource(), broken);

        _signals.Raise(PosixSignal.SIGHUP);

        Assert.Equal(129, await _exited.Task.WaitAsync(Bound));
        AssertBackOnOwnDisks();
        Assert.True(broken.Attempts > 2, "the rollback reported as it went, and every write failed");
    }

    [Fact]
    public async Task A_command_started_after_the_signal_stops_at_once()
    {
        await ActiveRunAsync();
        var snapshot = new TaskCompletionSource(TaskCreationOptions.RunContinuationsAsynchronously);
        _stop.Track(snapshot.Task);
        _signals.Raise(PosixSignal.SIGTERM);
        Assert.True(_stop.Stopping);

        using var later = new CancellationTokenSource();
        _stop.Enlist(later, _report);

        Assert.True(later.IsCancellationRequested);
        snapshot.SetResult();
        Assert.Equal(143, await _exited.Task.WaitAsync(Bound));
    }

    [Fact]
    public async Task A_run_whose_disks_are_committed_is_left_on_its_own_disks_with_its_overlays_for_retention()
    {
        var run = await ActiveRunAsync();
        foreach (var disk in _b.Host.Disks.ToList())
            await new Steps.CommitService(_b.Host.Virsh, _b.Host.QemuImg, NullSink.Instance)
                .CommitAsync(new Steps.CommitTarget(Bench.Domain, disk.Target, disk.Backing!, "raw", disk.Source), 0, null, CancellationToken.None);
        run.RecordCommitted("vda");
        run.RecordCommitted("vdb");
        var calls = _b.Host.Count(c => c.Is("virsh", "blockcommit"));
        _stop.Enlist(new CancellationTokenSource(), _report);

        _signals.Raise(PosixSignal.SIGTERM);

        Assert.Equal(143, await _exited.Task.WaitAsync(Bound));
        Assert.Equal(calls, _b.Host.Count(c => c.Is("virsh", "blockcommit")));
        Assert.True(File.Exists(Bench.OverlayOf(_b.Boot)) && File.Exists(Bench.OverlayOf(_b.Data)), "the overlays wait for retention");
        Assert.Contains(_report.Lines, l => l.Contains("writes to its own disks", StringComparison.Ordinal) && l.Contains("Repair-KvmBackup -DomainName oda_vm1", StringComparison.Ordinal));
        Assert.StartsWith("SIGTERM received: the backup stops as after Ctrl+C; no VM of it writes to overlays.", _report.Lines[0], StringComparison.Ordinal);
    }

    [Fact]
    public async Task A_process_that_ends_on_its_own_waits_for_a_signals_rollback_and_exits_with_its_code()
    {
        // The script went on past the stopped pipeline and ended: the process still waits, and says 129.
        Assert.Null(_stop.ExitCodeOnceRolledBack(TimeSpan.Zero));
        await ActiveRunAsync();
        var snapshot = new TaskCompletionSource(TaskCreationOptions.RunContinuationsAsynchronously);
        _stop.Track(snapshot.Task);
        _signals.Raise(PosixSignal.SIGHUP);
        var ending = Task.Run(() => _stop.ExitCodeOnceRolledBack(Bound));

        await Task.Delay(200);
        Assert.False(ending.IsCompleted, "the process ended before the VM was back");

        snapshot.SetResult();
        Assert.Equal(129, await ending.WaitAsync(Bound));
        AssertBackOnOwnDisks();
    }

    /// <summary>Registrations that a test raises by hand, as the runtime would on a real signal.</summary>
    private sealed class FakeSignals
    {
        private readonly List<Registration> _active = new();

        public IReadOnlyList<Registration> Active
        {
            get { lock (_active) return _active.ToList(); }
        }

        public IDisposable Register(PosixSignal signal, Action<PosixSignalContext> handler)
        {
            var registration = new Registration(this, signal, handler);
            lock (_active)
                _active.Add(registration);
            return registration;
        }

        public PosixSignalContext Raise(PosixSignal signal)
        {
            var context = new PosixSignalContext(signal);
            foreach (var registration in Active.Where(r => r.Signal == signal))
                registration.Handler(context);
            return context;
        }

        public sealed record Registration(FakeSignals Owner, PosixSignal Signal, Action<PosixSignalContext> Handler) : IDisposable
        {
            public void Dispose()
            {
                lock (Owner._active)
                    Owner._active.Remove(this);
            }
        }
    }

    /// <summary>What the user would read; with <see cref="Fails"/>, a terminal that is gone (every write throws).</summary>
    private sealed class RecordingReport : IStopReport
    {
        private readonly List<string> _lines = new();
        private readonly List<ProgressUpdate> _progress = new();
        private int _attempts;

        public bool Fails { get; init; }

        public int Attempts => Volatile.Read(ref _attempts);

        public List<string> Lines
        {
            get { lock (_lines) return _lines.ToList(); }
        }

        public List<ProgressUpdate> Progress
        {
            get { lock (_progress) return _progress.ToList(); }
        }

        public void Line(string message) => Write(() => _lines.Add(message), _lines);

        public void Verbose(string message) => Write(() => { }, _lines);

        public void Warning(string message) => Write(() => _lines.Add(message), _lines);

        void IOperationSink.Progress(ProgressUpdate update) => Write(() => _progress.Add(update), _progress);

        private void Write(Action add, object gate)
        {
            Interlocked.Increment(ref _attempts);
            if (Fails)
                throw new IOException("Input/output error");
            lock (gate)
                add();
        }
    }

    [Fact]
    public void A_console_write_to_a_terminal_that_hung_up_is_dropped_and_the_terminal_let_go_other_failures_are_thrown()
    {
        var hungUp = false;
        var detached = 0;
        var inner = new FailingWriter();
        var writer = new HangUpProofWriter(inner, () => hungUp, () => detached++);

        writer.Write("fine");
        Assert.Equal("fine", inner.Text);

        inner.Fails = true;
        Assert.Throws<IOException>(() => writer.WriteLine("a full disk, say")); // not a hang-up: as before
        Assert.Equal(0, detached);

        hungUp = true;
        writer.Write("to nobody");
        writer.WriteLine("to nobody".AsSpan());
        writer.Flush();
        Assert.Equal(3, detached);
    }

    private sealed class FailingWriter : StringWriter
    {
        public bool Fails { get; set; }

        public string Text => ToString();

        public override void Write(string? value)
        {
            if (Fails)
                throw new IOException("Input/output error");
            base.Write(value);
        }

        public override void WriteLine(string? value)
        {
            if (Fails)
                throw new IOException("Input/output error");
            base.WriteLine(value);
        }

        public override void Flush()
        {
            if (Fails)
                throw new IOException("Input/output error");
            base.Flush();
        }
    }
}
