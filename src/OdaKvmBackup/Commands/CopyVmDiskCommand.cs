using System.Management.Automation;
using OdaKvmBackup.Core;
using OdaKvmBackup.Core.Backup;
using OdaKvmBackup.Core.Processes;

namespace OdaKvmBackup.Commands;

/// <summary>Step 3: copies each frozen disk file into the run's backup set, sparse and verified.</summary>
[Cmdlet(VerbsCommon.Copy, "VmDisk", SupportsShouldProcess = true, ConfirmImpact = ConfirmImpact.Low)]
[OutputType(typeof(VmDiskBackup))]
public sealed class CopyVmDiskCommand : KvmCmdlet
{
    private const int ProgressId = 41;
    private string _destination = "";

    [Parameter(Mandatory = true, ValueFromPipeline = true)]
    public VmDiskBackup InputObject { get; set; } = null!;

    [Parameter(Mandatory = true, Position = 0)]
    [AllowEmptyString]
    public string Destination { get; set; } = "";

    /// <summary>MiB/s read from the disk files; 0 means as fast as the storage allows.</summary>
    [Parameter]
    [ValidateRange(0, 1_000_000)]
    public int BandwidthLimit { get; set; }

    [Parameter]
    public SwitchParameter Force { get; set; }

    protected override void BeginProcessing()
    {
        _destination = ResolveWritableFolder(Destination, nameof(Destination));
        if (BackupPipelineContext.Open is { } context)
        {
            context.Destination = _destination;
            context.Force = Force;
        }
    }

    protected override void ProcessRecord()
    {
        var disk = InputObject;
        var activity = $"Copying {disk.Target} of {disk.DomainName}";
        if (!ShouldProcess($"{disk.Target} of {disk.DomainName} ({disk.Source})", $"Copy into {Path.Combine(_destination, disk.DomainName, disk.RunId)}"))
        {
            WriteObject(disk);
            return;
        }
        var service = new CopyService(Virsh);
        try
        {
            var started = DateTime.UtcNow;
            Run(ct => service.CopyAsync(disk, _destination, Force, BandwidthLimit, (done, total) => Sink.Progress(
                new ProgressUpdate(ProgressId, null, activity, $"{FileSystemPaths.FormatBytes(done)} of {FileSystemPaths.FormatBytes(total)}",
                    total == 0 ? 100 : (int)(done * 100 / total))), ct));
            WriteVerbose($"Copied {disk.Target} of {disk.DomainName}: {FileSystemPaths.FormatBytes(disk.CopiedBytes ?? 0)} of data in {(DateTime.UtcNow - started).TotalSeconds:0.0} s, verified (content digest {disk.ContentDigest}).");
        }
        catch (BackupException ex)
        {
            // Terminating: the pipeline stops, and New-KvmDiskSnapshot upstream puts the domain back on its disks.
            var next = disk.Run is { OwnedByRunningPipeline: true }
                ? $" New-KvmDiskSnapshot puts '{disk.DomainName}' back on its own disks now."
                : disk.Run is { OnOverlays: true } ? $" '{disk.DomainName}' still writes to its overlays: pipe its objects to Invoke-BlockCommit or run Repair-KvmBackup -DomainName {disk.DomainName}." : "";
            ThrowTerminatingError(ToErrorRecord(new BackupException(ex.ErrorId, ex.Category, ex.Message + next, ex.RecommendedAction, ex.Target, ex), disk.DomainName));
            return;
        }
        finally
        {
            CompleteProgress(ProgressId, activity);
        }
        WriteObject(disk);
    }
}
