using System.Management.Automation;
using OdaKvmBackup.Core;
using OdaKvmBackup.Core.Backup;
using OdaKvmBackup.Core.Safety;

namespace OdaKvmBackup.Commands;

/// <summary>
/// Step 2 (and 4): one atomic, disk-only, quiesced external snapshot per domain for the piped disks, whatever
/// order they come in. It also guards the rest of the pipeline: if the pipeline is stopped before a domain is
/// committed back, it puts that domain back on its own disks before the command returns.
/// </summary>
[Cmdlet(VerbsCommon.New, "KvmDiskSnapshot", SupportsShouldProcess = true, ConfirmImpact = ConfirmImpact.Medium)]
[OutputType(typeof(VmDiskBackup))]
public sealed class NewKvmDiskSnapshotCommand : KvmCmdlet, IDisposable
{
    // The disks of each domain, domains in the order they first came: all of a domain's disks get one snapshot.
    private readonly List<(string Domain, List<VmDisk> Disks)> _pending = new();
    private readonly List<BackupRun> _runs = new();
    private BackupPipelineContext? _context;
    private bool _completed;

    [Parameter(Mandatory = true, ValueFromPipeline = true)]
    public VmDisk InputObject { get; set; } = null!;

    [Parameter]
    [ValidateNotNullOrEmpty]
    public string SnapshotName { get; set; } = BackupNames.DefaultSnapshotName;

    [Parameter]
    public string? OverlayDirectory { get; set; }

    [Parameter]
    public SwitchParameter CrashConsistent { get; set; }

    protected override void Begin()
    {
        try
        {
            BackupNames.RequireValidSnapshotName(SnapshotName);
        }
        catch (BackupException ex)
        {
            ThrowTerminatingError(ToErrorRecord(ex));
            return;
        }
        if (OverlayDirectory is not null)
            OverlayDirectory = ResolveWritableFolder(OverlayDirectory, nameof(OverlayDirectory));
        _context = BackupPipelineContext.Begin();
    }

    protected override void ProcessRecord()
    {
        _context?.Close(); // every BeginProcessing of the pipeline has run by now
        var domain = _pending.FirstOrDefault(p => p.Domain == InputObject.DomainName);
        if (domain.Disks is null)
            _pending.Add((InputObject.DomainName, [InputObject]));
        else if (domain.Disks.All(d => d.Target != InputObject.Target))
            domain.Disks.Add(InputObject);
    }

    protected override void EndProcessing()
    {
        _context?.Close();
        foreach (var (domain, disks) in _pending)
            SnapshotDomain(domain, disks);
        // Records written above have gone through the rest of the pipeline: a domain still on its overlays now is
        // one the user chose to hold (a script), or one whose commit failed. Say so, with the way out.
        foreach (var run in _runs.Where(r => r.OnOverlays && !r.Abandoned))
            WriteWarning($"'{run.DomainName}' writes to overlays until its disks are committed back: pipe these objects to Invoke-BlockCommit, or run Repair-KvmBackup -DomainName {run.DomainName}.");
        _completed = true;
    }

    private void SnapshotDomain(string domain, List<VmDisk> disks)
    {
        var tools = Tools;
        var service = new SnapshotService(tools);
        var request = new SnapshotRequest(domain, disks, SnapshotName, OverlayDirectory, CrashConsistent, _context?.Checks ?? []);
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
        foreach (var warning in plan.Warnings)
            WriteWarning(warning);

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
            run = SnapshotService.Begin(plan, tools);
        }
        catch (BackupException ex)
        {
            WriteError(ToErrorRecord(ex, domain));
            return;
        }
        run.Guardian = this;
        _runs.Add(run);
        StopSignals.Process.Add(run); // from now until it is over, SIGTERM and SIGHUP put it back as Ctrl+C does
        try
        {
            Run(ct => service.SnapshotAsync(run, plan, ct));
        }
        catch (BackupException ex)
        {
            WriteError(ToErrorRecord(ex, domain));
            GiveUp(run, "the snapshot step failed", pipelineAlive: true);
            return;
        }
        foreach (var disk in run.Disks)
            WriteObject(disk);
    }

    /// <summary>The pipeline ended without EndProcessing (an error downstream, Ctrl+C, a stopped pipeline): every
    /// domain not yet back on its own disks goes back now. Then each run lets go of its lock.</summary>
    public void Dispose()
    {
        _context?.Close();
        foreach (var run in _runs)
        {
            if (!_completed && run.Phase is not (RunPhase.Finished or RunPhase.Committed) && !run.Abandoned)
                GiveUp(run, "the pipeline stopped before the backup finished", pipelineAlive: false);
            run.Guardian = null;
            Release(run);
        }
    }
}
