using System.Runtime.InteropServices;

namespace OdaKvmBackup.Core.Run;

/// <summary>Where a run stopped by a signal reports: the rollback's progress, and the lines the user must read.</summary>
internal interface IStopReport : IOperationSink
{
    /// <summary>A line for the user (the host writes it as "OdaKvmBackup: ..." on stderr).</summary>
    void Line(string message);
}

/// <summary>
/// Makes SIGTERM (kill, timeout, systemctl stop) and SIGHUP (a closed terminal, a dropped SSH session) stop the
/// backup runs of this process the way Ctrl+C does: the work under way is cancelled and waited for, every run not
/// yet back on its own disks is put back (<see cref="BackupRun.FailAsync"/>, one rollback per run whoever asks),
/// the user is told, and the process exits with 128 + the signal's number (<see cref="ExitCode"/>). Further signals
/// do not cut the rollback short: they are answered with a line saying so. Only SIGKILL and power loss are left to
/// the journal and Repair-KvmBackup. The handlers are registered only while a run of this process is active.
/// </summary>
internal sealed class StopSignals
{
    private static readonly PosixSignal[] Handled = [PosixSignal.SIGTERM, PosixSignal.SIGHUP];

    /// <summary>How long one line to the user may take: a terminal that no longer reads never holds a rollback.</summary>
    private static readonly TimeSpan WriteBound = TimeSpan.FromSeconds(2);

    private readonly object _gate = new();
    private readonly Func<PosixSignal, Action<PosixSignalContext>, IDisposable> _register;
    private readonly Action<int> _exit;
    private readonly Action _hungUp;
    private readonly Action<bool> _armed;
    private readonly List<BackupRun> _runs = new();
    private readonly HashSet<Task> _work = new();
    private readonly List<WeakReference<CancellationTokenSource>> _stops = new();
    private readonly TaskCompletionSource _putBack = new(TaskCreationOptions.RunContinuationsAsynchronously);
    private List<IDisposable>? _registrations;
    private IStopReport? _report;
    private PosixSignal? _signal;
    private Task? _stop;

    /// <param name="register">Registers a handler for a signal (PosixSignalRegistration.Create in the process).</param>
    /// <param name="exit">Ends the process with a code (Environment.Exit in the process).</param>
    /// <param name="hungUp">Runs on every SIGHUP, first (in the process: <see cref="HungUpTerminal.Detach"/>).</param>
    /// <param name="armed">Told when the handlers come (true) and go (in the process: <see cref="HungUpTerminal.GuardConsole"/>).</param>
    public StopSignals(Func<PosixSignal, Action<PosixSignalContext>, IDisposable> register, Action<int> exit, Action hungUp, Action<bool> armed)
    {
        _register = register;
        _exit = exit;
        _hungUp = hungUp;
        _armed = armed;
    }

    /// <summary>The one instance of this process.</summary>
    public static StopSignals Process { get; } = CreateForProcess();

    private static StopSignals CreateForProcess()
    {
        var signals = new StopSignals((signal, handler) => PosixSignalRegistration.Create(signal, handler), Environment.Exit,
            HungUpTerminal.Detach, HungUpTerminal.GuardConsole);
        // A process that ends on its own (its script went on and finished) while a signal's rollback runs waits for
        // it, and still exits with the signal's code.
        AppDomain.CurrentDomain.ProcessExit += (_, _) =>
        {
            if (signals.ExitCodeOnceRolledBack(BackupRun.RollbackBound) is { } code)
                Environment.ExitCode = code;
        };
        return signals;
    }

    /// <summary>True once a signal has stopped the runs: from then on nothing new starts.</summary>
    public bool Stopping
    {
        get { lock (_gate) return _stop is not null; }
    }

    /// <summary>True while the signal handlers are registered (a run of this process is active, or being stopped).</summary>
    public bool Armed
    {
        get { lock (_gate) return _registrations is not null; }
    }

    /// <summary>The exit code after a signal: 128 + its number, as a shell reports a process it ended.</summary>
    public static int ExitCode(PosixSignal signal) => signal switch
    {
        PosixSignal.SIGHUP => 128 + 1,
        PosixSignal.SIGTERM => 128 + 15,
        _ => 1,
    };

    /// <summary>A run has begun: it is stopped by a signal until it is over (see <see cref="Forget"/>).</summary>
    public void Add(BackupRun run)
    {
        lock (_gate)
        {
            if (!_runs.Contains(run))
                _runs.Add(run);
            if (_registrations is null)
            {
                var registrations = new List<IDisposable>();
                foreach (var signal in Handled)
                    registrations.Add(_register(signal, OnSignal));
                _registrations = registrations;
                _armed(true);
            }
        }
    }

    /// <summary>A pipeline let go of a run: once it is over (finished, or put back) a signal has nothing to do for
    /// it; one still on its overlays (held in a variable for a later statement) stays. With no run left, the
    /// handlers go and the signals end the process as they would without the module.</summary>
    public void Forget(BackupRun run)
    {
        lock (_gate)
        {
            if (run.Phase is RunPhase.Finished || run.Abandoned && run.Phase is RunPhase.NeedsRepair)
                _runs.Remove(run);
            if (_runs.Count == 0 && _stop is null && _registrations is not null)
            {
                foreach (var registration in _registrations)
                    registration.Dispose();
                _registrations = null;
                _armed(false);
            }
        }
    }

    /// <summary>A command's stop (what Ctrl+C cancels), cancelled by a signal too, and where it reports. Held
    /// weakly: a command that is over is forgotten.</summary>
    public void Enlist(CancellationTokenSource stop, IStopReport report)
    {
        bool stopping;
        lock (_gate)
        {
            _stops.RemoveAll(s => !s.TryGetTarget(out _));
            _stops.Add(new WeakReference<CancellationTokenSource>(stop));
            _report = report;
            stopping = _stop is not null;
        }
        if (stopping)
            stop.Cancel(); // a command started after the signal stops at once
    }

    /// <summary>Work under way (a step: a snapshot libvirtd is taking, a commit): a signal's rollback starts only
    /// once it has ended, as after Ctrl+C.</summary>
    public void Track(Task work)
    {
        lock (_gate)
            _work.Add(work);
        work.ContinueWith(done =>
        {
            lock (_gate)
                _work.Remove(done);
        }, CancellationToken.None, TaskContinuationOptions.ExecuteSynchronously, TaskScheduler.Default);
    }

    /// <summary>For a command that would put a run back itself while a signal's stop does it: waits until that
    /// stop is over (in the process, it ends the process), then gives the run's outcome.</summary>
    public RollbackOutcome WaitForStop(BackupRun run)
    {
        Task? stop;
        lock (_gate)
            stop = _stop;
        stop?.GetAwaiter().GetResult();
        return run.FailAsync("the process was stopped by a signal", NullSink.Instance).GetAwaiter().GetResult();
    }

    /// <summary>For a process that ends on its own: null when no signal came; else waits, at most
    /// <paramref name="bound"/>, for the signal's rollback, and gives the exit code the signal calls for.</summary>
    public int? ExitCodeOnceRolledBack(TimeSpan bound)
    {
        PosixSignal signal;
        lock (_gate)
        {
            if (_signal is not { } received)
                return null;
            signal = received;
        }
        _putBack.Task.Wait(bound);
        return ExitCode(signal);
    }

    /// <summary>The signal handler: never lets the runtime end the process (ctx.Cancel); the first signal starts
    /// the stop, the next ones are told it will not be interrupted.</summary>
    private void OnSignal(PosixSignalContext context)
    {
        context.Cancel = true;
        if (context.Signal == PosixSignal.SIGHUP)
        {
            try
            {
                _hungUp();
            }
            catch (Exception)
            {
                // the terminal stays as it is: writes to it fail, and are guarded here
            }
        }
        List<CancellationTokenSource> stops;
        string? again = null;
        lock (_gate)
        {
            if (_stop is not null)
            {
                var first = _signal!.Value;
                again = $"{context.Signal} received{(first == context.Signal ? " again" : "")}: putting {OnOwnDisks(_runs)} is finishing and will not be interrupted (only SIGKILL could stop it, and then Repair-KvmBackup would be needed). pwsh exits with code {ExitCode(first)} once it is done.";
                stops = [];
            }
            else
            {
                _signal = context.Signal;
                stops = _stops.Select(s => s.TryGetTarget(out var stop) ? stop : null).OfType<CancellationTokenSource>().ToList();
                _stop = Task.Run(() => StopAsync(context.Signal));
            }
        }
        if (again is not null)
        {
            Tell(again);
            return;
        }
        foreach (var stop in stops)
        {
            try
            {
                stop.Cancel();
            }
            catch (ObjectDisposedException)
            {
                // that command is over
            }
        }
    }

    private async Task StopAsync(PosixSignal signal)
    {
        var reason = signal == PosixSignal.SIGHUP
            ? "the process received SIGHUP (its terminal or SSH session closed)"
            : "the process received SIGTERM (kill, timeout or systemctl stop)";
        var code = ExitCode(signal);
        List<BackupRun> runs;
        lock (_gate)
            runs = _runs.ToList();
        Tell(runs.Any(r => r.Phase is not (RunPhase.Finished or RunPhase.Committed))
            ? $"{signal} received: the backup stops as after Ctrl+C. Putting {OnOwnDisks(runs)} first, then pwsh exits with code {code}; further signals do not interrupt that."
            : $"{signal} received: the backup stops as after Ctrl+C; no VM of it writes to overlays. pwsh exits with code {code}.");
        try
        {
            var done = new HashSet<BackupRun>();
            using var bound = new CancellationTokenSource(BackupRun.RollbackBound);
            while (true)
            {
                // As after Ctrl+C: the steps under way end first (a snapshot libvirtd is taking is never cut short).
                await WorkEndedAsync(bound.Token).ConfigureAwait(false);
                lock (_gate)
                    runs = _runs.Where(r => !done.Contains(r)).ToList();
                if (runs.Count == 0)
                    break;
                await Task.WhenAll(runs.Select(r => PutBackAsync(r, reason))).ConfigureAwait(false);
                done.UnionWith(runs);
            }
        }
        finally
        {
            _putBack.TrySetResult();
        }
        Tell($"Exiting with code {code} ({signal}).");
        _exit(code);
    }

    private async Task WorkEndedAsync(CancellationToken bound)
    {
        while (true)
        {
            Task[] work;
            lock (_gate)
                work = _work.ToArray();
            if (work.All(w => w.IsCompleted) || bound.IsCancellationRequested)
                return;
            try
            {
                await Task.WhenAll(work).WaitAsync(bound).ConfigureAwait(false);
            }
            catch (Exception)
            {
                // cancelled or failed work has ended all the same (its command reports it); past the bound, the
                // rollback starts anyway: that bound is the one of the rollback itself
            }
        }
    }

    private async Task PutBackAsync(BackupRun run, string reason)
    {
        try
        {
            if (run.Phase is RunPhase.Finished || run.Abandoned && run.Phase is RunPhase.NeedsRepair)
                return; // over before the signal, or put back and reported already
            if (run.Phase is RunPhase.Committed)
            {
                // Every disk writes to its own file again, as after Ctrl+C; only the overlays wait for retention.
                using var bound = new CancellationTokenSource(BackupRun.RollbackBound);
                await run.MarkSetIncompleteAsync(reason, bound.Token).ConfigureAwait(false);
                Tell($"Because {reason}, the backup of '{run.DomainName}' stopped after its disks were committed: it writes to its own disks; its overlays stay beside them until Repair-KvmBackup -DomainName {run.DomainName} moves them to retention.");
                return;
            }
            var outcome = await run.FailAsync(reason, new GuardedReport(this)).ConfigureAwait(false);
            Tell(outcome.Message);
        }
        catch (Exception ex)
        {
            Tell($"Putting '{run.DomainName}' back failed unexpectedly ({ex.GetType().Name}: {ex.Message}). Run Repair-KvmBackup -DomainName {run.DomainName}.");
        }
    }

    /// <summary>"'vm1' back on its own disks", "'vm1', 'vm2' back on their own disks".</summary>
    private static string OnOwnDisks(IEnumerable<BackupRun> runs)
    {
        var names = runs.Where(r => r.Phase is not (RunPhase.Finished or RunPhase.Committed)).Select(r => $"'{r.DomainName}'").Distinct().ToList();
        return names.Count switch
        {
            0 => "the VMs back on their own disks", // the last one is back: only the exit is left
            1 => $"{names[0]} back on its own disks",
            _ => $"{string.Join(", ", names)} back on their own disks",
        };
    }

    /// <summary>Tells the user; a write that fails (a terminal gone after SIGHUP: EIO, EPIPE) or hangs never holds
    /// up or ends a rollback.</summary>
    private void Tell(string message)
    {
        IStopReport? report;
        lock (_gate)
            report = _report;
        if (report is not null)
            Guarded(() => report.Line(message));
    }

    private static void Guarded(Action write)
    {
        try
        {
            Task.Run(write).Wait(WriteBound);
        }
        catch (Exception)
        {
            // nobody can be told now: the journal, the set's manifest and the VM's state say what happened
        }
    }

    /// <summary>The rollback's progress, to the latest command's host, every write guarded.</summary>
    private sealed class GuardedReport(StopSignals owner) : IOperationSink
    {
        public void Verbose(string message) => Write(r => r.Verbose(message));

        public void Warning(string message) => Write(r => r.Warning(message));

        public void Progress(ProgressUpdate update) => Write(r => r.Progress(update));

        private void Write(Action<IStopReport> write)
        {
            IStopReport? report;
            lock (owner._gate)
                report = owner._report;
            if (report is not null)
                Guarded(() => write(report));
        }
    }
}
