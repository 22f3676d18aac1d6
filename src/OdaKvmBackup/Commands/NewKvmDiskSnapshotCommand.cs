using System.Management.Automation;
using OdaKvmBackup.Core;
using OdaKvmBackup.Core.Backup;
using OdaKvmBackup.Core.Processes;

namespace OdaKvmBackup.Commands;

/// <summary>
/// Step 2 (and 4): one atomic, disk-only, quiesced external snapshot per domain for the piped disks. It also
/// guards the rest of the pipeline: if the pipeline fails or is stopped before a domain is committed back,
/// it puts that domain back on its own disks before the command returns.
/// </summary>
[Cmdlet(VerbsCommon.New, "KvmDiskSnapshot", SupportsShouldProcess = true, ConfirmImpact = ConfirmImpact.Medium)]
[OutputType(typeof(VmDiskBackup))]
public sealed class NewKvmDiskSnapshotCommand : KvmCmdlet, IDisposable
{
    /// <summary>How long putting a domain back may take when the pipeline failed: Ctrl+C does not cut it short.</summary>
    private static readonly TimeSpan RollbackBound = TimeSpan.FromMinutes(30);
    private readonly List<VmDisk> _pending = new();
    private readonly List<BackupRun> _runs = new();
    private BackupPipelineContext? _context;
    private bool _completed;

    [Parameter(Mandatory = true, ValueFromPipeline = true)]
    public VmDisk InputObject { get; set; } = null!;

    [Parameter]
    [ValidateNotNullOrEmpty]
    public string SnapshotName { get; set; } = OverlayNaming.DefaultSnapshotName;

    [Parameter]
    public string? OverlayDirectory { get; set; }

    [Parameter]
    public SwitchParameter CrashConsistent { get; set; }

    protected override void BeginProcessing()
    {
        if (SnapshotName.Contains('/') || SnapshotName.Contains(',') || SnapshotName.StartsWith('.') || SnapshotName.StartsWith('-') || SnapshotName.Any(char.IsWhiteSpace))
        {
            ThrowTerminatingError(ToErrorRecord(ErrorIds.InvalidSnapshotName, BackupErrorCategory.InvalidArgument,
                $"The snapshot name '{SnapshotName}' cannot be used: it becomes part of the overlay file names.",
                "Use letters, digits, '.', '_' and '-', not starting with '.' or '-'.", SnapshotName));
            return;
        }
        if (OverlayDirectory is not null)
            OverlayDirectory = ResolveWritableFolder(OverlayDirectory, nameof(OverlayDirectory));
        _context = BackupPipelineContext.Begin();
    }

    protected override void ProcessRecord()
    {
        _context?.Close(); // every BeginProcessing of the pipeline has run by now
        if (_pending.Count > 0 && _pending[0].DomainName != InputObject.DomainName)
            SnapshotPending();
        _pending.Add(InputObject);
    }

    protected override void EndProcessing()
    {
        _context?.Close();
        SnapshotPending();
        // Records written above have gone through the rest of the pipeline: a domain still on its overlays
        // now is one the user chose to hold (a script), or one whose commit failed. Say so, with the way out.
        foreach (var run in _runs.Where(r => r.OnOverlays))
        {
            run.OwnedByRunningPipeline = false;
            WriteWarning($"'{run.DomainName}' writes to overlays until its disks are committed back: pipe these objects to Invoke-BlockCommit, or run Repair-KvmBackup -DomainName {run.DomainName}.");
        }
        _completed = true;
    }

    private void SnapshotPending()
    {
        if (_pending.Count == 0)
            return;
        var disks = _pending.ToList();
        _pending.Clear();
        var domain = disks[0].DomainName;
        var service = new SnapshotService(Virsh, QemuImg);
        var request = new SnapshotRequest(domain, disks, SnapshotName, OverlayDirectory, CrashConsistent, _context?.Downstream ?? DownstreamPlan.None);
        SnapshotPlan plan;
        try
        {
            plan = Run(ct => service.PlanAsync(request, ct));
        }
        catch (BackupException ex)
        {
            WriteError(ToErrorRecord(ex, domain));
            return;
        }
        foreach (var problem in plan.Problems)
            WriteError(ToErrorRecord(problem, domain));
        if (plan.Problems.Count > 0)
            return;

        var targets = string.Join(", ", plan.Disks.Select(d => d.Target));
        var action = plan.Cold
            ? $"Back up the disks ({targets}) of shut-off domain as they are: a cold copy, no snapshot"
            : $"Create external snapshot '{SnapshotName}' of {targets} ({(CrashConsistent ? "crash-consistent, no freeze" : "quiesced by the guest agent")}); overlays: {string.Join(", ", plan.Disks.Select(d => d.Overlay))}";
        if (!ShouldProcess(domain, action))
            return;
        if (plan.Cold)
            WriteWarning($"'{domain}' is shut off: its disks are copied as they are, without a snapshot (a cold backup).");
        else if (CrashConsistent)
            WriteWarning($"'{domain}' is snapshotted without freezing its file systems: the backup is crash-consistent, as after a power cut, and is recorded as such.");

        BackupRun run;
        try
        {
            run = Run(ct => service.ExecuteAsync(plan, ct));
        }
        catch (Exception ex) when (ex is BackupException or PipelineStoppedException)
        {
            if (BackupRun.FindActive(domain) is { } left && left.RunId == plan.RunId)
                RollBack(left, "the snapshot step failed", pipelineThread: true);
            if (ex is BackupException backupException)
            {
                WriteError(ToErrorRecord(backupException, domain));
                return;
            }
            throw;
        }
        _runs.Add(run);
        foreach (var disk in plan.Disks)
        {
            WriteObject(new VmDiskBackup
            {
                DomainName = domain,
                Target = disk.Target,
                Source = disk.Source,
                Format = disk.Format,
                Overlay = disk.Overlay,
                SnapshotName = SnapshotName,
                Consistency = run.Consistency,
                RunId = run.RunId,
                Run = run,
            });
        }
    }

    /// <summary>The pipeline ended without EndProcessing (an error downstream, Ctrl+C, a stopped pipeline):
    /// every domain still on its overlays goes back on its own disks now.</summary>
    public void Dispose()
    {
        _context?.Close();
        if (!_completed)
        {
            foreach (var run in _runs.Where(r => r.OnOverlays))
                RollBack(run, "the pipeline stopped before the backup finished", pipelineThread: false);
        }
        foreach (var run in _runs.Where(r => r.Consistency == BackupConsistency.Cold))
            run.Finish(); // a cold run holds only the lock
    }

    private void RollBack(BackupRun run, string why, bool pipelineThread)
    {
        using var bound = new CancellationTokenSource(RollbackBound);
        var commit = NewCommitService(NullSink.Instance);
        var retention = new RetentionService(new Core.Libvirt.VirshClient(new CliWrapProcessRunner(NullSink.Instance)));
        var failures = new List<string>();
        foreach (var disk in run.Journal.Disks.Where(d => !d.Committed))
        {
            try
            {
                commit.CommitAsync(new CommitTarget(run.DomainName, disk.Target, disk.Source, disk.Format, disk.Overlay), 0, null, bound.Token)
                    .GetAwaiter().GetResult();
                run.MarkCommitted(disk.Target);
            }
            catch (Exception ex) when (ex is BackupException or OperationCanceledException)
            {
                failures.Add($"{disk.Target}: {ex.Message}");
            }
        }
        // The overlays of a failed run hold nothing the disks lack now, and would block the next snapshot.
        foreach (var overlay in failures.Count == 0 ? run.Journal.Disks.Select(d => d.Overlay).OfType<string>().Where(File.Exists) : [])
        {
            try
            {
                retention.DiscardAsync(overlay, bound.Token).GetAwaiter().GetResult();
            }
            catch (Exception ex) when (ex is BackupException or IOException or OperationCanceledException)
            {
                failures.Add($"{overlay} was left in place: {ex.Message}");
            }
        }
        if (run.BackupSet is { } set)
            BackupSet.MarkIncomplete(set, why);
        var setNote = run.BackupSet is null ? "" : $" The backup set '{run.BackupSet}' is marked Incomplete unless every disk was already copied.";
        var message = failures.Count == 0
            ? $"Because {why}, '{run.DomainName}' was put back on its own disks ({string.Join(", ", run.Targets)}) and the run's overlays were removed.{setNote}"
            : run.OnOverlays
                ? $"Because {why}, OdaKvmBackup tried to put '{run.DomainName}' back on its own disks but could not: {string.Join("; ", failures)}. It STILL writes to overlays. Run Repair-KvmBackup -DomainName {run.DomainName}.{setNote}"
                : $"Because {why}, '{run.DomainName}' was put back on its own disks, but: {string.Join("; ", failures)}. Run Repair-KvmBackup -DomainName {run.DomainName} to clear what is left.{setNote}";
        if (pipelineThread)
        {
            if (!run.OnOverlays)
                WriteWarning(message);
            else
                WriteError(ToErrorRecord(ErrorIds.StillOnOverlays, BackupErrorCategory.InvalidResult, message, null, run.DomainName));
        }
        else
        {
            // The pipeline is gone: the host is the only way left to reach the user.
            try
            {
                Host.UI.WriteErrorLine("OdaKvmBackup: " + message);
            }
            catch (Exception ex) when (ex is NotImplementedException or NullReferenceException or InvalidOperationException or PSNotImplementedException)
            {
                // A host without a UI (a bare runspace): the journal and Repair-KvmBackup remain.
            }
        }
    }
}
