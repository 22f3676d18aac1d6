using System.Management.Automation;

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

    /// <summary>Copies every disk in full, none based on the last Complete set at the destination.</summary>
    [Parameter]
    public SwitchParameter Full { get; set; }

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
        _copy = new CopyService(Tools, store, Force, BandwidthLimit, ThrottleLimit, Sink, Full);
        BackupPipelineContext.Open?.Checks.Add(new CopyDestinationCheck(store, Force, _copy.Bases));
    }

    protected override void ProcessRecord()
    {
        var disk = InputObject;
        var run = disk.Run;
        if (_copy!.Failed(run) || _copy.HandedOn(disk))
            return; // its run failed (reported once), or it was copied and passed on with the first disk of its run
        if (_declined.Contains(run))
        {
            PassOn(disk);
            return;
        }
        if (!_copy.Started(run))
        {
            var (target, action) = _copy.Describe(run);
            if (!ShouldProcess(target, action))
            {
                _declined.Add(run);
                PassOn(disk);
                return;
            }
            try
            {
                Lease(run);
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
        foreach (var run in _copy!.Unfinished())
            PassOnUntil(run, null);
        foreach (var error in Run(_ => _copy.FinishVerificationsAsync()))
            WriteError(ToErrorRecord(error, error.Target));
        PassOnHeld();
        CompleteLeases();
    }

    /// <summary>Closes the destination's SSH session: without it every backup to a server left one open in the
    /// process (a nightly script's pwsh lives on). A run that writes to its set later (a commit in another
    /// statement) reconnects.</summary>
    private protected override void ReleaseResources()
    {
        _copy?.Bases.Dispose(); // base read-backs of runs given up before their copies began
        if (_copy?.Store is { } store)
            store.DisposeAsync().AsTask().GetAwaiter().GetResult();
    }

    /// <summary>Passes on the run's copies as they finish, until <paramref name="disk"/> has been (or all have).</summary>
    private void PassOnUntil(BackupRun run, VmDiskBackup? disk)
    {
        while (true)
        {
            var step = Run(_ => _copy!.TakeAsync(run));
            if (step.Failure is { } failure)
            {
                WriteFailure(failure, run.DomainName);
                return;
            }
            if (step.Copied is not { } copied)
            {
                if (disk is not null && disk.Stage == BackupStage.Copied)
                    PassOn(disk); // copied by an earlier Copy-VmDisk of this pipeline, into this destination
                return;
            }
            WriteVerbose(copied.Sentence);
            PassOn(copied.Disk);
            if (ReferenceEquals(copied.Disk, disk))
                return;
        }
    }
}
