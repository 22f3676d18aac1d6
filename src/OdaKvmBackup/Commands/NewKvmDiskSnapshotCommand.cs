using System.Management.Automation;

namespace OdaKvmBackup.Commands;

/// <summary>
/// Step 2 (and 4): one atomic, disk-only, quiesced external snapshot per domain for the piped disks, whatever
/// order they come in. Its lease on each run (<see cref="RunLease"/>) guards the rest of the pipeline: if the
/// pipeline is stopped before a domain is committed back, that domain goes back on its own disks before the command returns.
/// </summary>
[Cmdlet(VerbsCommon.New, "KvmDiskSnapshot", SupportsShouldProcess = true, ConfirmImpact = ConfirmImpact.Medium)]
[OutputType(typeof(VmDiskBackup))]
public sealed class NewKvmDiskSnapshotCommand : KvmCmdlet, IDisposable
{
    // The disks of each domain, domains in the order they first came: all of a domain's disks get one snapshot.
    private readonly List<(string Domain, List<VmDisk> Disks)> _pending = new();
    private readonly List<RunLease> _leases = new();
    private BackupPipelineContext? _context;

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
        foreach (var notice in _leases.Select(l => l.Run.OnOverlaysNotice).OfType<string>())
            WriteWarning(notice);
        foreach (var lease in _leases)
            lease.Complete();
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

        if (!ShouldProcess(domain, plan.Action))
            return;
        if (plan.Notice is { } notice)
            WriteWarning(notice);

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
        // From now until the run is over, a stopped pipeline or a signal puts it back.
        _leases.Add(run.Lease(HostReport));
        if (Run(ct => run.SnapshotAsync(plan, Sink, ct)) is { } failure)
        {
            WriteFailure(failure, domain);
            return;
        }
        foreach (var disk in run.Disks)
            WriteObject(disk);
    }

    /// <summary>The pipeline ended without EndProcessing (an error downstream, Ctrl+C, a stopped pipeline): every
    /// lease not completed puts its domain back on its own disks now. Then each run lets go of its lock.</summary>
    public void Dispose()
    {
        _context?.Close();
        foreach (var lease in _leases)
            lease.Dispose();
    }
}
