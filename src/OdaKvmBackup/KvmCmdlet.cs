using System.Collections.Concurrent;
using System.Management.Automation;
using System.Management.Automation.Host;

namespace OdaKvmBackup.Commands;

/// <summary>
/// Base of every cmdlet: core work runs on a task, and what it reports (verbose lines, warnings, progress) is
/// queued and written here on the pipeline thread, the only thread allowed to write. Ctrl+C cancels the work.
/// </summary>
public abstract class KvmCmdlet : PSCmdlet
{
    private readonly CancellationTokenSource _stopping = new();
    private readonly QueueSink _sink = new();

    protected CancellationToken StopToken => _stopping.Token;

    private protected IOperationSink Sink => _sink;

    protected override void StopProcessing() => _stopping.Cancel();

    /// <summary>Off the KVM host (a Windows jump host) every cmdlet stops here, before it reads its input, with the
    /// way to run it on the host; then the cmdlet's own <see cref="Begin"/>.</summary>
    protected sealed override void BeginProcessing()
    {
        if (!KvmHostPlatform.IsKvmHost)
        {
            ThrowTerminatingError(ToErrorRecord(ErrorIds.NotOnKvmHost, BackupErrorCategory.InvalidOperation,
                KvmHostPlatform.Refusal(KvmHostPlatform.SystemName), KvmHostPlatform.HowToRunOnTheHost, null));
            return;
        }
        // SIGTERM and SIGHUP cancel this command's work as Ctrl+C does, and report through its host.
        StopSignals.Process.Enlist(_stopping, new HostSink(Host?.UI));
        Begin();
    }

    /// <summary>The cmdlet's own BeginProcessing.</summary>
    protected virtual void Begin()
    {
    }

    /// <summary>Runs native commands, their command lines shown with -Verbose.</summary>
    private protected CliWrapProcessRunner Runner => new(_sink);

    /// <summary>virsh and qemu-img.</summary>
    private protected HostTools Tools
    {
        get
        {
            var runner = Runner;
            return new HostTools(new VirshClient(runner), new QemuImgClient(runner));
        }
    }

    /// <summary>The store a destination names: a folder on an SSH server ([user@]host:path), or a local path
    /// resolved the PowerShell way (relative to $PWD, ~).</summary>
    private protected Core.Stores.IBackupStore OpenStore(string destination, string parameterName) =>
        Core.Stores.BackupStores.Open(Core.Stores.BackupStores.IsRemote(destination) ? destination : ResolvePath(destination), Runner, parameterName);

    /// <summary>A destination as the user typed it: an SSH one ("user@host:/path", "host:/path") as it is, a local
    /// one resolved the PowerShell way (relative to $PWD, ~).</summary>
    protected string ResolveLocation(string location) =>
        Core.Stores.BackupStores.IsRemote(location) ? location : ResolvePath(location);

    private protected CommitService NewCommitService(int timeoutSeconds = 0) =>
        new(Tools.Virsh, Tools.QemuImg, _sink)
        {
            ConvergenceTimeout = timeoutSeconds > 0 ? TimeSpan.FromSeconds(timeoutSeconds) : CommitService.DefaultConvergenceTimeout,
        };

    /// <summary>Runs core work and waits for it here, writing what it reports as it goes. Failures the core did not
    /// name (an I/O error, say) still arrive as a <see cref="BackupException"/> with an id and a fix.</summary>
    protected T Run<T>(Func<CancellationToken, Task<T>> work)
    {
        var task = Task.Run(() => work(_stopping.Token));
        StopSignals.Process.Track(task);
        // Once the pipeline is stopping, writing to it throws: the work is still waited for, so that nothing (a
        // rollback) starts while it runs (a snapshot libvirtd is still taking).
        PipelineStoppedException? stopped = null;
        while (!task.IsCompleted)
        {
            ((IAsyncResult)task).AsyncWaitHandle.WaitOne(100);
            stopped ??= TryDrain();
        }
        stopped ??= TryDrain();
        if (stopped is not null || task.IsCanceled || task.Exception?.InnerException is OperationCanceledException && _stopping.IsCancellationRequested)
            throw stopped ?? new PipelineStoppedException();
        if (task.Exception?.InnerException is { } inner and not BackupException and not PipelineStoppedException)
            throw Unexpected(inner);
        return task.GetAwaiter().GetResult();
    }

    protected void Run(Func<CancellationToken, Task> work) => Run(async ct =>
    {
        await work(ct).ConfigureAwait(false);
        return true;
    });

    private static BackupException Unexpected(Exception ex) => ex switch
    {
        IOException or UnauthorizedAccessException => Core.Stores.StoreErrors.FromIOException(ex, path: null),
        _ => new BackupException(ErrorIds.UnexpectedError, BackupErrorCategory.NotSpecified,
            $"OdaKvmBackup failed unexpectedly: {ex.GetType().Name}: {ex.Message}",
            "Run the command again with -Verbose; if it happens again, report it with that output. Run Repair-KvmBackup if a backup was running.", null, ex),
    };

    protected void CompleteProgress(int id, string activity) =>
        WriteProgress(new ProgressRecord(id, activity, "Done") { RecordType = ProgressRecordType.Completed });

    private PipelineStoppedException? TryDrain()
    {
        try
        {
            Drain();
            return null;
        }
        catch (PipelineStoppedException ex)
        {
            return ex;
        }
    }

    private void Drain()
    {
        foreach (var write in _sink.Take())
        {
            switch (write)
            {
                case (string kind, string text) when kind == "verbose":
                    WriteVerbose(text);
                    break;
                case (string kind, string text) when kind == "warning":
                    WriteWarning(text);
                    break;
                case ProgressUpdate p:
                    WriteProgress(ToRecord(p));
                    break;
            }
        }
    }

    private static ProgressRecord ToRecord(ProgressUpdate p)
    {
        var record = new ProgressRecord(p.Id, p.Activity, p.Status)
        {
            PercentComplete = Math.Clamp(p.PercentComplete, 0, 100),
            RecordType = p.Completed ? ProgressRecordType.Completed : ProgressRecordType.Processing,
        };
        if (p.ParentId is { } parent)
            record.ParentActivityId = parent;
        return record;
    }

    /// <summary>An ErrorRecord whose message carries the fix, so every error view and log shows both (the fix
    /// stays on the exception as RecommendedAction; put in ErrorDetails too, pwsh would print it twice).</summary>
    protected static ErrorRecord ToErrorRecord(BackupException ex, object? target = null) =>
        new(ex, ex.ErrorId, (ErrorCategory)Enum.Parse(typeof(ErrorCategory), ex.Category.ToString()), target ?? ex.Target)
        {
            ErrorDetails = new ErrorDetails(ex.FullMessage),
        };

    protected static ErrorRecord ToErrorRecord(string id, BackupErrorCategory category, string message, string? fix, object? target) =>
        ToErrorRecord(new BackupException(id, category, message, fix, target?.ToString()), target);

    /// <summary>Domain names as typed, with wildcard patterns (ora*) expanded against the host's domains. A blank
    /// name, or a pattern that matches nothing, is an error of its own; the other names go on.</summary>
    protected IEnumerable<string> ExpandDomainNames(IEnumerable<string> names)
    {
        IReadOnlyList<string>? all = null;
        foreach (var name in names)
        {
            if (string.IsNullOrWhiteSpace(name))
            {
                WriteError(ToErrorRecord(ErrorIds.InvalidDomainName, BackupErrorCategory.InvalidArgument,
                    "A domain name is empty or blank.", "Name a domain as 'virsh list --all' shows it.", name));
                continue;
            }
            if (!WildcardPattern.ContainsWildcardCharacters(name))
            {
                yield return name;
                continue;
            }
            try
            {
                all ??= Run(ct => Tools.Virsh.ListAllDomainsAsync(ct));
            }
            catch (BackupException ex)
            {
                WriteError(ToErrorRecord(ex, name));
                yield break;
            }
            // A domain may be named like a pattern ("vm[1]", as completion offers it): that name itself, then.
            var pattern = new WildcardPattern(name, WildcardOptions.IgnoreCase);
            var matched = all.Contains(name, StringComparer.Ordinal) ? [name] : all.Where(pattern.IsMatch).ToList();
            if (matched.Count == 0)
            {
                WriteError(ToErrorRecord(ErrorIds.DomainNotFound, BackupErrorCategory.ObjectNotFound,
                    $"No domain on this host matches '{name}'.", "Check the names with 'virsh list --all' (names are case-sensitive; the pattern is not).", name));
            }
            foreach (var match in matched)
                yield return match;
        }
    }

    /// <summary>A path as PowerShell resolves it (relative to $PWD, ~), without requiring it to exist.</summary>
    protected string ResolvePath(string path) => string.IsNullOrWhiteSpace(path) ? path : GetUnresolvedProviderPathFromPSPath(path);

    /// <summary>Resolves a path the PowerShell way and checks the folder can be written.</summary>
    protected string ResolveWritableFolder(string path, string parameterName)
    {
        try
        {
            return FileSystemPaths.RequireWritableFolder(ResolvePath(path), parameterName);
        }
        catch (BackupException ex)
        {
            ThrowTerminatingError(ToErrorRecord(ex));
            throw; // not reached: ThrowTerminatingError does not return
        }
    }

    /// <summary>Where a run's lease reports once the pipeline may be gone: the host's own console.</summary>
    private protected IStopReport HostReport => new HostSink(Host?.UI);

    /// <summary>Writes a step's failure: its error, then what became of the VM (an error when something is left
    /// to do, else a warning).</summary>
    private protected void WriteFailure(StepFailure failure, string domain)
    {
        WriteError(ToErrorRecord(failure.Error, domain));
        if (failure.Rollback.AsError() is { } error)
            WriteError(ToErrorRecord(error, domain));
        else
            WriteWarning(failure.Rollback.Message);
    }

    /// <summary>Keeps verbose lines and warnings in order, and only the latest progress of each activity.</summary>
    private sealed class QueueSink : IOperationSink
    {
        private readonly ConcurrentQueue<object> _messages = new();
        private readonly ConcurrentDictionary<int, ProgressUpdate> _progress = new();

        public void Verbose(string message) => _messages.Enqueue(("verbose", message));

        public void Warning(string message) => _messages.Enqueue(("warning", message));

        public void Progress(ProgressUpdate update) => _progress[update.Id] = update;

        public IEnumerable<object> Take()
        {
            while (_messages.TryDequeue(out var message))
                yield return message;
            foreach (var id in _progress.Keys.ToList())
            {
                if (_progress.TryRemove(id, out var update))
                    yield return update;
            }
        }
    }

    /// <summary>The way to the user once the pipeline is gone (after Ctrl+C): the host's own console. Progress and
    /// warnings still show; a host without a UI (a bare runspace) leaves only the journal and Repair-KvmBackup.</summary>
    private sealed class HostSink(PSHostUserInterface? ui) : IStopReport
    {
        private readonly object _gate = new();

        public void Verbose(string message) { }

        public void Warning(string message) => Line(message, error: false);

        public void Progress(ProgressUpdate update) => Safely(() => ui?.WriteProgress(update.Id, ToRecord(update)));

        void IStopReport.Line(string message) => Line(message, error: true);

        public void Line(string message, bool error) => Safely(() =>
        {
            if (error)
                ui?.WriteErrorLine("OdaKvmBackup: " + message);
            else
                ui?.WriteWarningLine("OdaKvmBackup: " + message);
        });

        private void Safely(Action write)
        {
            lock (_gate)
            {
                try
                {
                    write();
                }
                catch (Exception ex) when (ex is NotImplementedException or NullReferenceException or InvalidOperationException or PSNotImplementedException or IOException)
                {
                    // a host without a UI, or a terminal gone (EIO after SIGHUP): the journal and Repair-KvmBackup remain
                }
            }
        }
    }
}

/// <summary>
/// How New-KvmDiskSnapshot learns, before any snapshot, what Copy-VmDisk and Move-OverlayToRetention later in the
/// same pipeline will check: PowerShell runs every command's BeginProcessing before the first record flows, so
/// those cmdlets register their checks here between New-KvmDiskSnapshot's BeginProcessing and its first record.
/// It carries checks only, never the state of a run.
/// </summary>
internal sealed class BackupPipelineContext
{
    [ThreadStatic]
    private static BackupPipelineContext? t_open;

    public List<IPreflightCheck> Checks { get; } = new();

    /// <summary>The context a command later in the pipeline can still register with, if any.</summary>
    public static BackupPipelineContext? Open => t_open;

    public static BackupPipelineContext Begin() => t_open = new BackupPipelineContext();

    public void Close()
    {
        if (ReferenceEquals(t_open, this))
            t_open = null;
    }
}
