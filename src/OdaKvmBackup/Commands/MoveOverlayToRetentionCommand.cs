using System.Management.Automation;
using OdaKvmBackup.Core;
using OdaKvmBackup.Core.Backup;

namespace OdaKvmBackup.Commands;

/// <summary>Step 6: moves each overlay no disk uses any more into &lt;Path&gt;/&lt;domain&gt;/&lt;run&gt;/.</summary>
[Cmdlet(VerbsCommon.Move, "OverlayToRetention", SupportsShouldProcess = true, ConfirmImpact = ConfirmImpact.Medium)]
[OutputType(typeof(VmDiskBackup))]
public sealed class MoveOverlayToRetentionCommand : KvmCmdlet
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

    protected override void BeginProcessing()
    {
        _path = ResolveWritableFolder(Path, nameof(Path));
        if (BackupPipelineContext.Open is { } context)
            context.RetentionPath = _path;
    }

    protected override void ProcessRecord()
    {
        var disk = InputObject;
        if (disk.Overlay is null)
        {
            WriteObject(disk);
            return;
        }
        var target = RetentionService.RetainedPath(_path, disk.DomainName, disk.RunId, disk.Overlay);
        if (!ShouldProcess(disk.Overlay, $"Move to '{target}'"))
        {
            WriteObject(disk);
            return;
        }
        try
        {
            var service = new RetentionService(Virsh);
            if (!_otherChains.TryGetValue(disk.DomainName, out var others))
                _otherChains[disk.DomainName] = others = Run(ct => service.FilesInChainsOfOtherDomainsAsync(disk.DomainName, ct));
            disk.RetainedOverlay = Run(ct => service.MoveAsync(disk.DomainName, disk.RunId, disk.Overlay, _path, ct, others));
            disk.Stage = BackupStage.Retained;
        }
        catch (BackupException ex)
        {
            WriteError(ToErrorRecord(ex, disk.DomainName));
            return;
        }
        WriteObject(disk);
    }
}
