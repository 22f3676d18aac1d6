using System.Management.Automation;
using OdaKvmBackup.Core;
using OdaKvmBackup.Core.Backup;

namespace OdaKvmBackup.Commands;

/// <summary>Step 6: moves each overlay no disk uses any more into &lt;Path&gt;/&lt;domain&gt;/&lt;run&gt;/.</summary>
[Cmdlet(VerbsCommon.Move, "OverlayToRetention", SupportsShouldProcess = true, ConfirmImpact = ConfirmImpact.Medium)]
[OutputType(typeof(VmDiskBackup))]
public sealed class MoveOverlayToRetentionCommand : RunStepCmdlet
{
    private string _path = "";
    // The other domains' chains, read once per domain of the batch: only the owning domain can normally hold an
    // overlay, and it is read afresh for every move.
    private readonly Dictionary<string, IReadOnlySet<string>> _otherChains = new(StringComparer.Ordinal);

    [Parameter(Mandatory = true, ValueFromPipeline = true)]
    public VmDiskBackup InputObject { get; set; } = null!;

    [Parameter(Mandatory = true, Position = 0)]
    [AllowEmptyString]
    public string Path { get; set; } = "";

    // The last step of a backup: what comes out of it is what the user keeps, wherever the pipeline goes on.
    protected override bool HoldsUntilSetSettled => true;

    protected override void Begin()
    {
        _path = ResolveWritableFolder(Path, nameof(Path));
        BackupPipelineContext.Open?.Checks.Add(new RetentionCheck(_path));
    }

    protected override void ProcessRecord()
    {
        var disk = InputObject;
        var run = disk.Run;
        if (run.Abandoned)
            return; // its overlays went with the rollback
        var record = run.Record.Disk(disk.Target);
        if (disk.Overlay is null || record.RetainedName is null)
        {
            PassOn(disk);
            return;
        }
        var folder = BackupNames.RetentionFolder(disk.DomainName, disk.RunId);
        var target = BackupNames.RetainedPath(_path, folder, record.RetainedName);
        if (!ShouldProcess(disk.Overlay, $"Move to '{target}'"))
        {
            PassOn(disk);
            return;
        }
        string? moved = null;
        try
        {
            Adopt(run);
            var service = new RetentionService(Tools.Virsh);
            if (!_otherChains.TryGetValue(disk.DomainName, out var others))
                _otherChains[disk.DomainName] = others = Run(ct => service.FilesInChainsOfOtherDomainsAsync(disk.DomainName, ct));
            moved = Run(ct => service.MoveAsync(disk.DomainName, disk.Overlay, _path, folder, record.RetainedName, ct, others));
            run.RecordRetained(disk.Target, moved);
        }
        catch (BackupException ex) when (moved is not null)
        {
            // The overlay was moved; only the journal could not record it (JournalWriteFailed).
            WriteError(ToErrorRecord(ex.WithSentence($"The overlay of {disk.Target} was moved to '{moved}'."), disk.DomainName));
            return;
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
        Completed = true;
    }
}
