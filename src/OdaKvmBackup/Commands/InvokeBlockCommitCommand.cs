using System.Management.Automation;
using OdaKvmBackup.Core;
using OdaKvmBackup.Core.Backup;
using OdaKvmBackup.Core.Processes;
using OdaKvmBackup.Core.Safety;

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
        if (run.Abandoned)
        {
            WriteVerbose($"{disk.Target} of {disk.DomainName}: run {run.RunId} was given up; nothing to commit.");
            return;
        }
        if (disk.Overlay is null)
        {
            WriteVerbose($"{disk.Target} of {disk.DomainName}: cold backup, nothing to commit.");
            PassOn(disk);
            return;
        }
        if (!ShouldProcess($"{disk.Target} of {disk.DomainName}", $"Commit overlay '{disk.Overlay}' into '{disk.Source}' and pivot back to it (blockcommit --active --pivot)"))
        {
            PassOn(disk);
            return;
        }
        var activity = $"Committing {disk.Target} of {disk.DomainName}";
        var progressId = ProgressIds.Commit * 1000 + Math.Abs(disk.Target.GetHashCode(StringComparison.Ordinal) % 997);
        var committed = false;
        try
        {
            Adopt(run);
            run.BeginCommit(disk.Target);
            var commit = NewCommitService(TimeoutSec);
            var outcome = Run(ct => commit.CommitAsync(new CommitTarget(disk.DomainName, disk.Target, disk.Source, disk.Format, disk.Overlay), BandwidthLimit,
                percent => Sink.Progress(new ProgressUpdate(progressId, null, activity, $"{percent} %", percent)), ct));
            committed = true;
            run.RecordCommitted(disk.Target);
            WriteVerbose($"{disk.Target} of {disk.DomainName} writes to {disk.Source} again ({outcome}, {disk.TimeOnOverlay?.TotalSeconds:0.0} s on its overlay).");
        }
        catch (BackupException ex) when (committed)
        {
            // The commit worked; only the journal could not record it (JournalWriteFailed).
            WriteError(ToErrorRecord(ex.WithSentence($"The commit itself worked: {disk.Target} of '{disk.DomainName}' writes to '{disk.Source}' again."), disk.DomainName));
            return;
        }
        catch (BackupException ex)
        {
            WriteError(ToErrorRecord(ex.WithSentence($"'{disk.DomainName}' still writes to the overlay '{disk.Overlay}' for {disk.Target}.",
                ex.RecommendedAction ?? $"Run Repair-KvmBackup -DomainName {disk.DomainName}."), disk.DomainName));
            return;
        }
        finally
        {
            CompleteProgress(progressId, activity);
        }
        PassOn(disk);
    }

    protected override void EndProcessing()
    {
        PassOnHeld();
        Completed = true;
    }
}
