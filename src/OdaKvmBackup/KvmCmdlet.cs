using System.Collections.Concurrent;
using System.Management.Automation;
using OdaKvmBackup.Core;
using OdaKvmBackup.Core.Backup;
using OdaKvmBackup.Core.Libvirt;
using OdaKvmBackup.Core.Processes;
using OdaKvmBackup.Core.QemuImg;
using OdaKvmBackup.Core.Safety;

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

    protected IOperationSink Sink => _sink;

    protected override void StopProcessing() => _stopping.Cancel();

    protected VirshClient Virsh => new(new CliWrapProcessRunner(_sink));

    protected QemuImgClient QemuImg => new(new CliWrapProcessRunner(_sink));

    protected CommitService NewCommitService(IOperationSink? sink = null, int timeoutSeconds = 0)
    {
        var runner = new CliWrapProcessRunner(sink ?? _sink);
        return new CommitService(new VirshClient(runner), new QemuImgClient(runner), sink ?? _sink)
        {
            ConvergenceTimeout = timeoutSeconds > 0 ? TimeSpan.FromSeconds(timeoutSeconds) : CommitService.DefaultConvergenceTimeout,
        };
    }

    /// <summary>Runs core work and waits for it here, writing what it reports as it goes.</summary>
    protected T Run<T>(Func<CancellationToken, Task<T>> work)
    {
        var task = Task.Run(() => work(_stopping.Token));
        while (!task.IsCompleted)
        {
            ((IAsyncResult)task).AsyncWaitHandle.WaitOne(100);
            Drain();
        }
        Drain();
        if (task.IsCanceled || task.Exception?.InnerException is OperationCanceledException && _stopping.IsCancellationRequested)
            throw new PipelineStoppedException();
        return task.GetAwaiter().GetResult();
    }

    protected void Run(Func<CancellationToken, Task> work) => Run(async ct =>
    {
        await work(ct).ConfigureAwait(false);
        return true;
    });

    protected void CompleteProgress(int id, string activity) =>
        WriteProgress(new ProgressRecord(id, activity, "Done") { RecordType = ProgressRecordType.Completed });

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
                    var record = new ProgressRecord(p.Id, p.Activity, p.Status)
                    {
                        PercentComplete = Math.Clamp(p.PercentComplete, 0, 100),
                        RecordType = p.Completed ? ProgressRecordType.Completed : ProgressRecordType.Processing,
                    };
                    if (p.ParentId is { } parent)
                        record.ParentActivityId = parent;
                    WriteProgress(record);
                    break;
            }
        }
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

    /// <summary>Resolves a path the PowerShell way (relative to $PWD, ~) and checks the folder can be written.</summary>
    protected string ResolveWritableFolder(string path, string parameterName)
    {
        try
        {
            return FileSystemPaths.RequireWritableFolder(string.IsNullOrWhiteSpace(path) ? path : GetUnresolvedProviderPathFromPSPath(path), parameterName);
        }
        catch (BackupException ex)
        {
            ThrowTerminatingError(ToErrorRecord(ex));
            throw; // not reached: ThrowTerminatingError does not return
        }
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
}

/// <summary>
/// How New-KvmDiskSnapshot learns, before any snapshot, where Copy-VmDisk and Move-OverlayToRetention later in
/// the same pipeline will write: PowerShell runs every command's BeginProcessing before the first record flows,
/// so those cmdlets register here between New-KvmDiskSnapshot's BeginProcessing and its first record.
/// </summary>
internal sealed class BackupPipelineContext
{
    [ThreadStatic]
    private static BackupPipelineContext? t_open;

    public string? Destination { get; set; }
    public bool Force { get; set; }
    public string? RetentionPath { get; set; }

    /// <summary>The context a command later in the pipeline can still register with, if any.</summary>
    public static BackupPipelineContext? Open => t_open;

    public static BackupPipelineContext Begin() => t_open = new BackupPipelineContext();

    public void Close()
    {
        if (ReferenceEquals(t_open, this))
            t_open = null;
    }

    public DownstreamPlan Downstream => new(Destination, Force, RetentionPath);
}
