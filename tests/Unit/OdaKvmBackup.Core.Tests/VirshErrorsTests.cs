namespace OdaKvmBackup.Core.Tests;

/// <summary>virsh's stderr, as libvirt 9 prints it with LC_ALL=C (lab.md sections 5-7, landscape.md 3.2).</summary>
public class VirshErrorsTests
{
    internal const string NoAgentChannel = "error: argument unsupported: QEMU guest agent is not configured\n";
    internal const string AgentNotConnected = "error: Guest agent is not responding: QEMU guest agent is not connected\n";
    internal const string AgentDisappeared = "error: guest agent command timed out: Guest agent disappeared while executing command\n";
    internal const string SelinuxFreeze = "error: internal error: unable to execute QEMU agent command 'guest-fsfreeze-freeze': failed to open /mnt/x: Permission denied\n";
    internal const string WindowsFreeze = "error: internal error: unable to execute QEMU agent command 'guest-fsfreeze-freeze': failed to add C:\\ to snapshot set\n";
    internal const string LinuxFreeze = "error: internal error: unable to execute QEMU agent command 'guest-fsfreeze-freeze': failed to freeze /data: Device or resource busy\n";
    internal const string DomainGone = "error: failed to get domain 'linux_vm2'\n"; // captured from the lab
    internal const string DomainNotFoundOld = "error: failed to get domain 'x'\nerror: Domain not found: no domain with matching name 'x'\n";
    internal const string NoSocket = "error: failed to connect to the hypervisor\nerror: Failed to connect socket to '/var/run/libvirt/libvirt-sock': No such file or directory\n";
    internal const string NotReady = "error: block copy still active: disk 'vda' not ready for pivot yet\n";
    internal const string JobActive = "error: block copy still active: disk 'vdb' already in active block job\n";
    internal const string NoBase = "error: invalid argument: could not find base image in chain for 'vda'\n";
    internal const string NoJob = "error: invalid argument: disk vda does not have an active block job\n";
    internal const string MomentExists = "error: operation failed: domain moment FILE_STAGE_BACKUP.TEMP already exists\n";
    internal const string OverlayExists = "error: unsupported configuration: external snapshot file for disk vda already exists and is not a block device: /var/tmp/odakvmlab/images/x1-vda.FILE_STAGE_BACKUP.TEMP\n";

    [Theory]
    [InlineData(NoAgentChannel, VirshFailure.AgentNotConfigured)]
    [InlineData("error: Unable to get filesystem information\nerror: argument unsupported: QEMU guest agent is not configured\n", VirshFailure.AgentNotConfigured)]
    [InlineData(AgentNotConnected, VirshFailure.AgentNotConnected)]
    [InlineData(AgentDisappeared, VirshFailure.AgentNotConnected)]
    [InlineData(SelinuxFreeze, VirshFailure.FreezeDeniedBySelinux)]
    [InlineData(WindowsFreeze, VirshFailure.VssVolumeFailed)]
    [InlineData(LinuxFreeze, VirshFailure.FreezeFailed)]
    [InlineData(DomainGone, VirshFailure.DomainNotFound)]
    [InlineData(DomainNotFoundOld, VirshFailure.DomainNotFound)]
    [InlineData(NoSocket, VirshFailure.Unreachable)]
    [InlineData("error: Disconnected from qemu:///system due to end of file\n", VirshFailure.Unreachable)]
    [InlineData("error: End of file while reading data: Input/output error\n", VirshFailure.Unreachable)]
    [InlineData(NotReady, VirshFailure.NotReadyForPivot)]
    [InlineData("\rBlock commit: [100 %]error: failed to pivot job for disk vda\n" + NotReady, VirshFailure.NotReadyForPivot)]
    [InlineData(JobActive, VirshFailure.BlockJobActive)]
    [InlineData(NoBase, VirshFailure.NoBaseImage)]
    // libvirt 9 with --base, when the disk was pivoted meanwhile (seen on the lab after a killed run's virsh pivoted first)
    [InlineData("error: invalid argument: could not find image '/u05/vm_x/linux_boot' beneath '/u05/vm_x/linux_boot' in chain for 'vda'\n", VirshFailure.NoBaseImage)]
    [InlineData(NoJob, VirshFailure.NoBlockJob)]
    [InlineData("No current block job for vda", VirshFailure.NoBlockJob)]
    [InlineData(MomentExists, VirshFailure.SnapshotExists)]
    [InlineData(OverlayExists, VirshFailure.OverlayFileExists)]
    [InlineData("error: Requested operation is not valid: domain is not running\n", VirshFailure.DomainNotRunning)]
    [InlineData("error: internal error: unable to execute QEMU command 'blockdev-add': Could not create file: No space left on device\n", VirshFailure.NoSpace)]
    [InlineData("error: unsupported configuration: no disk named 'vdz'\n", VirshFailure.Other)]
    [InlineData("", VirshFailure.Other)]
    public void Classify_reads_what_the_failure_means(string stderr, VirshFailure expected)
    {
        Assert.Equal(expected, VirshErrors.Classify(stderr));
    }

    [Fact]
    public void Classify_does_not_take_a_path_containing_freeze_for_a_guest_freeze_failure()
    {
        // A VM called freezer-db: its overlay path is quoted in an unrelated error.
        const string stderr = "error: unsupported configuration: external snapshot file for disk vda already exists and is not a block device: /u01/vmstore/vm_freezer-db/freezer-db_boot.FILE_STAGE_BACKUP.TEMP\n";

        Assert.Equal(VirshFailure.OverlayFileExists, VirshErrors.Classify(stderr));
    }

    [Fact]
    public void Message_is_libvirts_own_words_without_the_error_prefix()
    {
        Assert.Equal("block copy still active: disk 'vda' not ready for pivot yet", VirshErrors.Message(NotReady));
    }

    [Fact]
    public void Message_joins_two_error_lines()
    {
        Assert.Equal("failed to connect to the hypervisor Failed to connect socket to '/var/run/libvirt/libvirt-sock': No such file or directory",
            VirshErrors.Message(NoSocket));
    }

    [Fact]
    public void Message_ignores_progress_before_the_error()
    {
        Assert.Equal("block copy still active: disk 'vda' not ready for pivot yet",
            VirshErrors.Message("\rBlock commit: [ 34 %]\rBlock commit: [ 50 %]\n" + NotReady));
    }

    [Fact]
    public void Message_of_stderr_without_error_lines_is_the_text_itself()
    {
        Assert.Equal("something odd", VirshErrors.Message("  something odd \n"));
    }

    private static VirshException ToException(string stderr, string? domain = "linux_vm", params string[] args) =>
        VirshClient.ToException(args.Length > 0 ? args : VirshArguments.SnapshotCreate(domain ?? "d", "FILE_STAGE_BACKUP.TEMP", true, [], []),
            new ProcessResult(1, "\n", stderr, TimeSpan.FromMilliseconds(10)), domain);

    [Theory]
    [InlineData(NoAgentChannel, ErrorIds.AgentNotConfigured, BackupErrorCategory.NotInstalled, "-CrashConsistent")]
    [InlineData(AgentNotConnected, ErrorIds.AgentNotConnected, BackupErrorCategory.ResourceUnavailable, "systemctl enable --now qemu-guest-agent")]
    [InlineData(AgentDisappeared, ErrorIds.AgentNotConnected, BackupErrorCategory.ResourceUnavailable, "guest-ping")]
    [InlineData(SelinuxFreeze, ErrorIds.FreezeDeniedBySelinux, BackupErrorCategory.PermissionDenied, "setsebool -P virt_qemu_ga_read_nonsecurity_files 1")]
    [InlineData(WindowsFreeze, ErrorIds.VssVolumeFailed, BackupErrorCategory.InvalidResult, "-CrashConsistent")]
    [InlineData(LinuxFreeze, ErrorIds.FreezeFailed, BackupErrorCategory.InvalidResult, "-CrashConsistent")]
    [InlineData(DomainGone, ErrorIds.DomainNotFound, BackupErrorCategory.ObjectNotFound, "virsh list --all")]
    [InlineData(NoSocket, ErrorIds.LibvirtUnreachable, BackupErrorCategory.ConnectionError, "Start libvirtd")]
    public void ToException_gives_an_error_id_a_category_and_the_fix(string stderr, string errorId, BackupErrorCategory category, string fix)
    {
        var ex = ToException(stderr);

        Assert.Equal(errorId, ex.ErrorId);
        Assert.Equal(category, ex.Category);
        Assert.Equal("linux_vm", ex.Target);
        Assert.Contains(fix, ex.RecommendedAction, StringComparison.Ordinal);
        Assert.Contains(fix, ex.FullMessage, StringComparison.Ordinal);
        Assert.Equal(1, ex.ExitCode);
        Assert.Equal(stderr, ex.StandardError);
    }

    [Fact]
    public void Selinux_freeze_denial_says_what_to_run_in_the_guest_and_quotes_libvirt()
    {
        var ex = ToException(SelinuxFreeze);

        Assert.Contains("setsebool -P virt_qemu_ga_read_nonsecurity_files 1", ex.FullMessage, StringComparison.Ordinal);
        Assert.Contains("SELinux", ex.Message, StringComparison.Ordinal);
        Assert.Contains("failed to open /mnt/x: Permission denied", ex.Message, StringComparison.Ordinal);
    }

    /// <summary>What qemu-ga's Windows VSS requester (qga/vss-win32/requester.cpp) says, as libvirt wraps it: older
    /// agents print the text alone, newer ones add ": Windows error 0x..." and the system's words for that code.</summary>
    public static TheoryData<string, VirshFailure, string, BackupErrorCategory> WindowsVss => new()
    {
        { "error: internal error: unable to execute QEMU agent command 'guest-fsfreeze-freeze': failed to add C:\\ to snapshot set\n",
            VirshFailure.VssVolumeFailed, ErrorIds.VssVolumeFailed, BackupErrorCategory.InvalidResult },
        { "error: internal error: unable to execute QEMU agent command 'guest-fsfreeze-freeze': failed to add \\\\?\\Volume{9c24dfaf-a611-4b06-bd60-e4fe3e7103da}\\ to snapshot set: Windows error 0x8004230c: The volume is not supported by the specified provider.\n",
            VirshFailure.VssVolumeFailed, ErrorIds.VssVolumeFailed, BackupErrorCategory.InvalidResult },
        { "error: internal error: unable to execute QEMU agent command 'guest-fsfreeze-thaw': couldn't hold writes: fsfreeze is limited up to 10 seconds\n",
            VirshFailure.VssFreezeTimedOut, ErrorIds.VssFreezeTimedOut, BackupErrorCategory.OperationTimeout },
        { "error: internal error: unable to execute QEMU agent command 'guest-fsfreeze-thaw': couldn't hold writes: fsfreeze is limited up to 10 seconds: Windows error 0x80042314: The shadow copy provider timed out while holding writes to the volume being shadow copied.\n",
            VirshFailure.VssFreezeTimedOut, ErrorIds.VssFreezeTimedOut, BackupErrorCategory.OperationTimeout },
        { "error: internal error: unable to execute QEMU agent command 'guest-fsfreeze-freeze': couldn't receive Frozen event from VSS provider\n",
            VirshFailure.VssFreezeTimedOut, ErrorIds.VssFreezeTimedOut, BackupErrorCategory.OperationTimeout },
        { "error: internal error: unable to execute QEMU agent command 'guest-fsfreeze-freeze': DoSnapshotSet exited without Frozen event: Windows error 0x80004005: Unspecified error\n",
            VirshFailure.VssFreezeTimedOut, ErrorIds.VssFreezeTimedOut, BackupErrorCategory.OperationTimeout },
        { "error: internal error: unable to execute QEMU agent command 'guest-fsfreeze-freeze': failed to gather writer metadata\n",
            VirshFailure.VssWriterFailed, ErrorIds.VssWriterFailed, BackupErrorCategory.InvalidResult },
        { "error: internal error: unable to execute QEMU agent command 'guest-fsfreeze-freeze': failed to gather writer metadata: Windows error 0x800423f3: The writer experienced a transient error.\n",
            VirshFailure.VssWriterFailed, ErrorIds.VssWriterFailed, BackupErrorCategory.InvalidResult },
        { "error: internal error: unable to execute QEMU agent command 'guest-fsfreeze-freeze': failed to prepare for backup: Windows error 0x800423f4: The writer experienced a non-transient error.\n",
            VirshFailure.VssWriterFailed, ErrorIds.VssWriterFailed, BackupErrorCategory.InvalidResult },
        { "error: internal error: unable to execute QEMU agent command 'guest-fsfreeze-freeze': failed to add component SqlServerWriter(SQLWriter)\n",
            VirshFailure.VssWriterFailed, ErrorIds.VssWriterFailed, BackupErrorCategory.InvalidResult },
        { "error: internal error: unable to execute QEMU agent command 'guest-fsfreeze-thaw': unexpected error in VSS provider\n",
            VirshFailure.VssProviderFailed, ErrorIds.VssProviderFailed, BackupErrorCategory.NotInstalled },
        { "error: internal error: unable to execute QEMU agent command 'guest-fsfreeze-freeze': failed to create VSS backup components: Windows error 0x80070005: Access is denied.\n",
            VirshFailure.VssProviderFailed, ErrorIds.VssProviderFailed, BackupErrorCategory.NotInstalled },
    };

    [Theory]
    [MemberData(nameof(WindowsVss))]
    public void Windows_VSS_freeze_failure_names_its_cause_what_to_do_inside_the_guest_and_CrashConsistent_as_the_last_resort(
        string stderr, VirshFailure failure, string errorId, BackupErrorCategory category)
    {
        var ex = ToException(stderr, "win2022");

        Assert.Equal(failure, VirshErrors.Classify(stderr));
        Assert.Equal(failure, ex.Failure);
        Assert.Equal(errorId, ex.ErrorId);
        Assert.Equal(category, ex.Category);
        Assert.Equal("win2022", ex.Target);
        Assert.Contains("Windows guest 'win2022'", ex.Message, StringComparison.Ordinal);
        Assert.Contains(VirshErrors.Message(stderr), ex.Message, StringComparison.Ordinal); // libvirt's own words
        var fix = ex.RecommendedAction!;
        var inside = fix.IndexOf("nside the guest", StringComparison.Ordinal);
        var crash = fix.IndexOf("-CrashConsistent", StringComparison.Ordinal);
        Assert.True(inside >= 0, $"the fix does not say what to do inside the guest: {fix}");
        Assert.True(crash > inside, $"-CrashConsistent is not offered after the fix inside the guest: {fix}");
        Assert.Contains("last resort", fix[..crash], StringComparison.Ordinal);
    }

    [Fact]
    public void Linux_freeze_denied_by_SELinux_is_not_taken_for_a_Windows_failure()
    {
        Assert.Equal(VirshFailure.FreezeDeniedBySelinux, VirshErrors.Classify(SelinuxFreeze));
        Assert.Equal(ErrorIds.FreezeDeniedBySelinux, ToException(SelinuxFreeze).ErrorId);
    }

    [Fact]
    public void Agent_not_connected_names_the_domain_in_the_check_command()
    {
        var ex = ToException(AgentNotConnected, "oda_vm1");

        Assert.Contains("virsh qemu-agent-command oda_vm1 '{\"execute\":\"guest-ping\"}'", ex.RecommendedAction, StringComparison.Ordinal);
    }

    [Fact]
    public void Unknown_domain_names_the_domain_and_quotes_virsh()
    {
        var ex = ToException(DomainGone, "linux_vm2", "dumpxml", "--domain", "linux_vm2");

        Assert.Equal(VirshFailure.DomainNotFound, ex.Failure);
        Assert.Contains("'linux_vm2'", ex.Message, StringComparison.Ordinal);
        Assert.Contains("failed to get domain 'linux_vm2'", ex.Message, StringComparison.Ordinal);
        Assert.Equal("virsh dumpxml --domain linux_vm2", ex.CommandLine);
    }

    [Theory]
    [InlineData(NotReady, VirshFailure.NotReadyForPivot, "not ready for pivot yet")]
    [InlineData(JobActive, VirshFailure.BlockJobActive, "already in active block job")]
    [InlineData(NoBase, VirshFailure.NoBaseImage, "could not find base image in chain for 'vda'")]
    [InlineData(MomentExists, VirshFailure.SnapshotExists, "domain moment FILE_STAGE_BACKUP.TEMP already exists")]
    public void Other_failures_are_VirshFailed_with_the_command_the_domain_and_libvirts_words(string stderr, VirshFailure failure, string said)
    {
        var ex = ToException(stderr, "linux_vm", "blockcommit", "--domain", "linux_vm", "--path", "vda", "--active", "--verbose", "--pivot");

        Assert.Equal(failure, ex.Failure);
        Assert.Equal(ErrorIds.VirshFailed, ex.ErrorId);
        Assert.Equal(BackupErrorCategory.InvalidResult, ex.Category);
        Assert.StartsWith("virsh blockcommit failed for 'linux_vm' with exit code 1: ", ex.Message, StringComparison.Ordinal);
        Assert.Contains(said, ex.Message, StringComparison.Ordinal);
        Assert.Equal("virsh blockcommit --domain linux_vm --path vda --active --verbose --pivot", ex.CommandLine);
    }

    [Fact]
    public void Command_line_of_an_error_quotes_odd_arguments_so_it_can_be_pasted()
    {
        var ex = ToException(NoBase, "a;b $(rm -rf /)", "blockcommit", "--domain", "a;b $(rm -rf /)", "--path", "vda");

        Assert.Equal("virsh blockcommit --domain 'a;b $(rm -rf /)' --path vda", ex.CommandLine);
    }
}
