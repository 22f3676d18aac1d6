using System.Management.Automation;

namespace OdaKvmBackup.Commands;

/// <summary>Step 6: moves each overlay no disk uses any more into &lt;Path&gt;/&lt;domain&gt;/&lt;run&gt;/.</summary>
[Cmdlet(VerbsCommon.Move, "OverlayToRetention", SupportsShouldProcess = true, ConfirmImpact = ConfirmImpact.Medium)]
[OutputType(typeof(VmDiskBackup))]
public sealed class MoveOverlayToRetentionCommand : RunStepCmdlet
{
    private RetentionBatch? _batch;

    [Parameter(Mandatory = true, ValueFromPipeline = true)]
    public VmDiskBackup InputObject { get; set; } = null!;

    [Parameter(Mandatory = true, Position = 0)]
    [AllowEmptyString]
    public string Path { get; set; } = "";

    // The last step of a backup: what comes out of it is what the user keeps, wherever the pipeline goes on.
    protected override bool HoldsUntilSetSettled => true;

    protected override void Begin()
    {
        var path = ResolveWritableFolder(Path, nameof(Path));
        _batch = new RetentionBatch(new RetentionService(Tools.Virsh), path);
        BackupPipelineContext.Open?.Checks.Add(new RetentionCheck(path));
    }

    protected override void ProcessRecord()
    {
        var disk = InputObject;
        var run = disk.Run;
        var step = run.PlanRetention(disk.Target, _batch!);
        if (!step.Acts || !ShouldProcess(step.Target, step.Action))
        {
            if (step.PassOn || step.Acts)
                PassOn(disk);
            return;
        }
        try
        {
            Lease(run);
            Run(ct => run.RetainAsync(disk.Target, _batch!, ct));
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
