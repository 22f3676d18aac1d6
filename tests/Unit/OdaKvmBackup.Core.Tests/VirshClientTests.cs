using OdaKvmBackup.Core.Tests.Support;

namespace OdaKvmBackup.Core.Tests;

public class VirshClientTests
{
    [Fact]
    public void Domcapabilities_give_the_hosts_emulator_and_its_firmware_files()
    {
        // The lab's libvirt 9.0 / QEMU 7.2 (no OVMF installed: no loader files).
        var lab = VirshClient.ParseDomainCapabilities(Fixture.Read("qemu-x86_64-pc.domcapabilities.xml"));
        Assert.Equal("/usr/bin/qemu-system-x86_64", lab.Emulator);
        Assert.Empty(lab.Loaders);

        // Oracle Linux 8 with edk2-ovmf, in the shape libvirt prints it.
        var ol8 = VirshClient.ParseDomainCapabilities("""
            <domainCapabilities><path>/usr/libexec/qemu-kvm</path><domain>kvm</domain><machine>pc-q35-rhel8.6.0</machine><arch>x86_64</arch>
              <os supported='yes'><enum name='firmware'><value>efi</value></enum>
                <loader supported='yes'><value>/usr/share/OVMF/OVMF_CODE.secboot.fd</value><value>/usr/share/OVMF/OVMF_CODE.fd</value>
                  <enum name='type'><value>rom</value><value>pflash</value></enum></loader></os></domainCapabilities>
            """);
        Assert.Equal("/usr/libexec/qemu-kvm", ol8.Emulator);
        Assert.Equal(["/usr/share/OVMF/OVMF_CODE.secboot.fd", "/usr/share/OVMF/OVMF_CODE.fd"], ol8.Loaders);
    }

    [Theory]
    [InlineData("<domainCapabilities><domain>kvm</domain></domainCapabilities>")]
    [InlineData("<domainCapabilities><path>qemu-kvm</path></domainCapabilities>")]
    [InlineData("error: not xml")]
    public void Domcapabilities_without_an_emulator_path_are_a_parser_error(string output)
    {
        Assert.Equal(ErrorIds.UnparsableOutput, Assert.Throws<BackupException>(() => VirshClient.ParseDomainCapabilities(output)).ErrorId);
    }

    [Fact]
    public void Blockjob_raw_output_of_a_running_commit_is_read()
    {
        // lab.md section 5: blockjob labg1 vdb --info --raw during a commit at --bandwidth 2
        var job = VirshClient.ParseBlockJob(" type=Active Block Commit\n bandwidth=2\n cur=6553600\n end=12976128\n\n");

        Assert.NotNull(job);
        Assert.Equal("Active Block Commit", job.Type);
        Assert.Equal(6553600, job.Current);
        Assert.Equal(12976128, job.End);
        Assert.Equal(50, job.Percent);
        Assert.False(job.Ready);
    }

    [Fact]
    public void Blockjob_whose_cursor_reached_the_end_is_ready_to_pivot()
    {
        var job = VirshClient.ParseBlockJob(FakeHost.ReadyJob);

        Assert.NotNull(job);
        Assert.True(job.Ready);
        Assert.Equal(100, job.Percent);
    }

    [Fact]
    public void Blockjob_that_has_not_started_copying_is_not_ready()
    {
        var job = VirshClient.ParseBlockJob(" type=Active Block Commit\n bandwidth=0\n cur=0\n end=0\n\n");

        Assert.NotNull(job);
        Assert.False(job.Ready);
        Assert.Equal(0, job.Percent);
    }

    [Theory]
    [InlineData("\n")]
    [InlineData("")]
    [InlineData("No current block job for vda")]
    [InlineData("No current block job for vda\n\n")]
    public void No_job_is_null(string output)
    {
        Assert.Null(VirshClient.ParseBlockJob(output));
    }

    [Theory]
    [InlineData("\rBlock commit: [ 34 %]", 34)]
    [InlineData("Block commit: [ 34 %]", 34)]
    [InlineData("Block commit: [100 %]", 100)]
    [InlineData("Block commit: [  0 %]", 0)]
    [InlineData("Block commit: [42.17 %]", 42)]
    [InlineData("Block commit: [99.99 %]", 99)]
    [InlineData("Active Block Commit: [ 50 %]", 50)]
    public void Progress_percent_is_read_from_old_and_new_virsh_lines(string line, int expected)
    {
        Assert.Equal(expected, VirshClient.ParseProgressPercent(line));
    }

    [Theory]
    [InlineData("")]
    [InlineData("Successfully pivoted")]
    [InlineData("error: block copy still active: disk 'vda' not ready for pivot yet")]
    [InlineData("Block commit: [ %]")]
    public void Lines_without_progress_give_no_percent(string line)
    {
        Assert.Null(VirshClient.ParseProgressPercent(line));
    }

    [Fact]
    public async Task Blockcommit_reports_each_percent_virsh_prints()
    {
        var runner = new FakeRunner(_ => Results.Ok("\nSuccessfully pivoted\n",
            "\rBlock commit: [ 34 %]\rBlock commit: [ 50 %]\rBlock commit: [ 83 %]\rBlock commit: [ 99 %]\rBlock commit: [100 %]"));
        var seen = new List<int>();

        await new VirshClient(runner).BlockCommitAsync("labg1", "vdb", "/x/g1-vdb.qcow2", 2, seen.Add, TimeSpan.FromMinutes(20), CancellationToken.None);

        Assert.Equal([34, 50, 83, 99, 100], seen);
        var call = Assert.Single(runner.Calls);
        Assert.Equal("virsh", call.Program);
        Assert.Equal(TimeSpan.FromMinutes(20), call.Timeout); // a commit runs longer than a query may
        Assert.Equal(["blockcommit", "--domain", "labg1", "--path", "vdb", "--active", "--verbose", "--pivot", "--base", "/x/g1-vdb.qcow2", "--bandwidth", "2"], call.Args);
    }

    [Fact]
    public async Task Queries_run_with_the_default_tool_timeout()
    {
        var runner = new FakeRunner(_ => Results.Ok("running\n\n"));

        await new VirshClient(runner).GetStateAsync("linux_vm", CancellationToken.None);

        // null: the runner applies ToolTimeouts.Default ($env:ODAKVMBACKUP_TOOL_TIMEOUT_SEC or 300 s).
        Assert.Null(Assert.Single(runner.Calls).Timeout);
    }

    [Fact]
    public async Task State_is_trimmed()
    {
        var runner = new FakeRunner(_ => Results.Ok("shut off\n\n"));

        Assert.Equal("shut off", await new VirshClient(runner).GetStateAsync("linux_vm", CancellationToken.None));
    }

    [Fact]
    public async Task Snapshot_names_are_one_per_line_without_the_blank_end()
    {
        var runner = new FakeRunner(_ => Results.Ok("FILE_STAGE_BACKUP.TEMP\nother\n\n"));

        Assert.Equal(["FILE_STAGE_BACKUP.TEMP", "other"], await new VirshClient(runner).ListSnapshotNamesAsync("linux_vm", CancellationToken.None));
    }

    [Fact]
    public async Task Describe_reads_the_state_and_the_live_xml()
    {
        var host = new FakeHost("linux_vm") { LiveXml = Fixture.Read("linux_vm.live.xml") };

        var domain = await host.Virsh.DescribeAsync("linux_vm", CancellationToken.None);

        Assert.Equal(["vda", "vdb"], domain.Disks.Select(d => d.Target));
        Assert.All(domain.Disks, d => Assert.Equal("running", d.DomainState));
        Assert.DoesNotContain(host.Calls, c => c.Has("--inactive"));
    }

    [Fact]
    public async Task A_failing_command_throws_the_classified_error()
    {
        var runner = new FakeRunner(_ => Results.VirshError(VirshErrorsTests.DomainGone));

        var ex = await Assert.ThrowsAsync<VirshException>(() => new VirshClient(runner).GetStateAsync("linux_vm2", CancellationToken.None));

        Assert.Equal(ErrorIds.DomainNotFound, ex.ErrorId);
        Assert.Equal("linux_vm2", ex.Target);
        Assert.Single(runner.Calls); // not found is not retried
    }

    [Fact]
    public async Task Permission_denied_on_the_libvirt_socket_fails_at_once_as_PermissionDenied()
    {
        // Captured: virsh as a user that may not open the read-write socket.
        const string stderr = "error: failed to connect to the hypervisor\nerror: Failed to connect socket to '/var/run/libvirt/libvirt-sock': Permission denied\n";
        var runner = new FakeRunner(_ => Results.VirshError(stderr));
        using var cts = new CancellationTokenSource();

        var query = new VirshClient(runner).GetStateAsync("linux_vm", cts.Token);
        var finished = await Task.WhenAny(query, Task.Delay(TimeSpan.FromSeconds(3))) == query;
        var calls = runner.Calls.Count;
        await cts.CancelAsync();
        var ex = await Record.ExceptionAsync(() => query);

        // Waiting does not grant a permission: retrying it for a minute only delays the answer.
        Assert.True(finished, $"still retrying after 3 s ({calls} calls)");
        Assert.Equal(1, calls);
        var error = Assert.IsType<VirshException>(ex);
        Assert.Equal(BackupErrorCategory.PermissionDenied, error.Category);
        Assert.Contains("root", error.FullMessage, StringComparison.Ordinal);
    }

    [Fact]
    public async Task Agent_ping_that_fails_is_not_retried()
    {
        var runner = new FakeRunner(_ => Results.VirshError(VirshErrorsTests.AgentNotConnected));

        var ex = await Assert.ThrowsAsync<VirshException>(() => new VirshClient(runner).PingGuestAgentAsync("linux_vm", CancellationToken.None));

        Assert.Equal(ErrorIds.AgentNotConnected, ex.ErrorId);
        Assert.Single(runner.Calls);
    }
}
