using System.Management.Automation;

namespace OdaKvmBackup.Commands;

/// <summary>Step 5: merges each overlay back and pivots, so the disk writes to its own file again.</summary>
[Cmdlet(VerbsLifecycle.Invoke, "BlockCommit", SupportsShouldProcess = true, ConfirmImpact = ConfirmImpact.Medium)]
[OutputType(typeof(VmDiskBackup))]
public sealed class InvokeBlockCommitCommand : RunStepCmdlet
{
    [Parameter(Mandatory = true, ValueFromPipeline = true)]
    public VmDiskBackup InputObject { get; set; } = null!;

    /// <summary>MiB/s for the commit (virsh --bandwidth); 0 means unlimited.</summary>
    [Parameter]
    [ValidateRange(0, 1_000_000)]
    public int BandwidthLimit { get; set; }

    /// <summary>Seconds a commit may take to catch up with the guest's writes; then it is stopped and the disk
    /// stays on its overlay (reported, nothing lost). A throttled commit that cannot catch up is unthrottled first.</summary>
    [Parameter]
    [ValidateRange(1, 86_400)]
    public int TimeoutSec { get; set; } = 900;

    protected override void ProcessRecord()
    {
        var disk = InputObject;
        var run = disk.Run;
        var step = run.PlanCommit(disk.Target);
        if (step.Note is { } note)
            WriteVerbose(note);
        if (!step.Acts || !ShouldProcess(step.Target, step.Action))
        {
            if (step.PassOn || step.Acts)
                PassOn(disk);
            return;
        }
        try
        {
            Lease(run);
            WriteVerbose(Run(ct => run.CommitAsync(disk.Target, BandwidthLimit, TimeSpan.FromSeconds(TimeoutSec), Sink, ct)));
        }
        catch (BackupException ex)
        {
            WriteError(ToErrorRecord(ex, disk.DomainName));
            return;
        }
        PassOn(disk);
    }

    protected override void EndProcessing()
    {
        PassOnHeld();
        CompleteLeases();
    }
}
