using System.Management.Automation;
using OdaKvmBackup.Core;
using OdaKvmBackup.Core.Backup;
using OdaKvmBackup.Core.Safety;
using OdaKvmBackup.Core.Storage;

namespace OdaKvmBackup.Commands;

/// <summary>
/// Step 3: copies the frozen disk files of each snapshot into its backup set, sparse and verified. The disks of
/// one snapshot are copied together and each is passed on as soon as it is copied, so it can be committed while
/// the others are still copied.
/// </summary>
[Cmdlet(VerbsCommon.Copy, "VmDisk", SupportsShouldProcess = true, ConfirmImpact = ConfirmImpact.Low)]
[OutputType(typeof(VmDiskBackup))]
public sealed class CopyVmDiskCommand : RunStepCmdlet
{
    private readonly HashSet<BackupRun> _declined = new();
    private readonly HashSet<BackupRun> _failed = new();
    private readonly HashSet<BackupRun> _touched = new();
    private CopyService? _copy;

    [Parameter(Mandatory = true, ValueFromPipeline = true)]
    public VmDiskBackup InputObject { get; set; } = null!;

    [Parameter(Mandatory = true, Position = 0)]
    [AllowEmptyString]
    public string Destination { get; set; } = "";

    /// <summary>MiB/s read from each disk file; 0 means as fast as the storage allows.</summary>
    [Parameter]
    [ValidateRange(0, 1_000_000)]
    public int BandwidthLimit { get; set; }

    /// <summary>How many disks of one VM are copied at once.</summary>
    [Parameter]
    [ValidateRange(1, 64)]
    public int ThrottleLimit { get; set; } = 2;

    [Parameter]
    public SwitchParameter Force { get; set; }

    protected override void Begin()
    {
        IBackupStore store;
        try
        {
            if (string.IsNullOrWhiteSpace(Destination))
                throw new BackupException(ErrorIds.PathNotFound, BackupErrorCategory.InvalidArgument, "-Destination is empty.", "Name an existing folder with -Destination.", Destination);
            store = OpenStore(Destination, nameof(Destination));
            Run(store.CheckWritableAsync);
        }
        catch (BackupException ex)
        {
            ThrowTerminatingError(ToErrorRecord(ex));
            return;
        }
        _copy = new CopyService(Tools, store, Force, BandwidthLimit, ThrottleLimit, Sink);
        BackupPipelineContext.Open?.Checks.Add(new CopyDestinationCheck(store, Force));
    }

    protected override void ProcessRecord()
    {
        var disk = InputObject;
        var run = disk.Run;
        if (_failed.Contains(run) || _copy!.HandedOn(disk))
            return; // its run failed (reported once), or it was copied and passed on with the first disk of its run
        if (_declined.Contains(run))
        {
            PassOn(disk);
            return;
        }
        if (!_copy.Started(run))
        {
            var set = _copy.Store.Describe(BackupNames.SetFolder(run.DomainName, run.RunId));
            var replaces = Force.IsPresent ? $" (an existing set of that name is kept aside as {set}.replaced-<time>)" : "";
            if (!ShouldProcess($"{run.DomainName} ({string.Join(", ", run.Disks.Select(d => d.Target))})", $"Copy the frozen disk files into {set}, sparse, and verify them{replaces}"))
            {
                _declined.Add(run);
                PassOn(disk);
                return;
            }
            try
            {
                Adopt(run);
                _touched.Add(run);
                _copy.Start(run, StopToken);
            }
            catch (BackupException ex)
            {
                WriteError(ToErrorRecord(ex, run.DomainName));
                if (ex.ErrorId is ErrorIds.RunHasAnotherDestination)
                    PassOn(disk); // copied once already: let the rest of the pipeline commit it
                return;
            }
        }
        PassOnUntil(run, disk);
    }

    protected override void EndProcessing()
    {
        // Disks of a snapshot that never reached this cmdlet (filtered out upstream) were copied all the same.
        foreach (var run in _touched.Where(r => !_failed.Contains(r) && _copy!.Started(r) && !_copy.AllHandedOn(r)).ToList())
            PassOnUntil(run, null);
        foreach (var error in Run(_ => _copy!.FinishVerificationsAsync()))
            WriteError(ToErrorRecord(error, error.Target));
        PassOnHeld();
        Completed = true;
    }

    /// <summary>Passes on the run's copies as they finish, until <paramref name="disk"/> has been (or all have).</summary>
    private void PassOnUntil(BackupRun run, VmDiskBackup? disk)
    {
        while (true)
        {
            CopyOutcome? outcome;
            try
            {
                outcome = Run(_ => _copy!.NextAsync(run));
            }
            catch (BackupException ex)
            {
                _failed.Add(run);
                Run(_ => _copy!.AbandonAsync(run));
                WriteError(ToErrorRecord(ex.WithSentence($"The backup of '{run.DomainName}' is given up; other VMs go on.", target: run.DomainName), run.DomainName));
                GiveUp(run, $"copying a disk of '{run.DomainName}' failed", pipelineAlive: true);
                return;
            }
            if (outcome is null)
            {
                if (disk is not null && disk.Stage == BackupStage.Copied)
                    PassOn(disk); // copied by an earlier Copy-VmDisk of this pipeline, into this destination
                return;
            }
            WriteVerbose($"Copied {outcome.Disk.Target} of {outcome.Disk.DomainName} in {outcome.Duration.TotalSeconds:0.0} s: {FileSystemPaths.FormatBytes(outcome.Disk.CopiedBytes ?? 0)} of data (content digest {outcome.Disk.ContentDigest}); it is read back from storage in the background.");
            PassOn(outcome.Disk);
            if (ReferenceEquals(outcome.Disk, disk))
                return;
        }
    }
}
