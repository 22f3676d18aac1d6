using System.Xml.Linq;
using OdaKvmBackup.Core.Tests.Support;

namespace OdaKvmBackup.Core.Tests;

public class DomainXmlTests
{
    private const string LabStore = "/var/tmp/odakvmlab/sharedrepo/vmstore/.ACFS/snaps";
    private const string OdaStore = "/u05/app/sharedrepo/vmstore/.ACFS/snaps";

    private static DomainDescription Real(string file = "linux_vm.live.xml", string state = "running") =>
        DomainXml.Parse(Fixture.Read(file), state);

    private static DomainDescription OdaVm1() => DomainXml.Parse(Fixture.Read("oda_vm1.on-overlay.live.xml"), "running");

    private static VmDisk Disk(DomainDescription domain, string target) => Assert.Single(domain.Disks, d => d.Target == target);

    [Fact]
    public void Real_running_domain_lists_its_two_disks_with_files_and_formats()
    {
        var domain = Real();

        Assert.Equal("linux_vm", domain.Name);
        Assert.Equal(["vda", "vdb"], domain.Disks.Select(d => d.Target));
        var vda = Disk(domain, "vda");
        Assert.Equal($"{LabStore}/vm_linux_vm/linux_boot", vda.Source);
        Assert.Equal("qcow2", vda.Format);
        var vdb = Disk(domain, "vdb");
        Assert.Equal($"{LabStore}/vdisk_disco_secundario_linux_vm/disco_secundario", vdb.Source);
        Assert.Equal("raw", vdb.Format);
        Assert.All(domain.Disks, d =>
        {
            Assert.Equal("linux_vm", d.DomainName);
            Assert.Equal("file", d.Type);
            Assert.Equal("disk", d.Device);
            Assert.Equal("virtio", d.Bus);
            Assert.Equal("running", d.DomainState);
            Assert.False(d.ReadOnly);
            Assert.False(d.Shareable);
        });
    }

    [Fact]
    public void Real_disks_with_an_empty_backingStore_are_not_on_an_overlay()
    {
        Assert.All(Real().Disks, d =>
        {
            Assert.False(d.OnOverlay);
            Assert.Empty(d.BackingChain);
            Assert.Empty(d.BackingFormats);
        });
    }

    [Fact]
    public void Real_running_domain_reports_its_connected_guest_agent()
    {
        var domain = Real();

        Assert.True(domain.HasGuestAgentChannel);
        Assert.Equal("connected", domain.GuestAgentState);
    }

    [Fact]
    public void Real_inactive_definition_has_the_agent_channel_but_no_state()
    {
        var domain = Real("linux_vm.inactive.xml", "");

        Assert.True(domain.HasGuestAgentChannel);
        Assert.Null(domain.GuestAgentState);
        Assert.Equal(["vda", "vdb"], domain.Disks.Select(d => d.Target));
        Assert.Equal($"{LabStore}/vm_linux_vm/linux_boot", Disk(domain, "vda").Source);
    }

    [Fact]
    public void Disconnected_agent_is_reported_as_such()
    {
        // Captured while the guest was still booting.
        var domain = Real("linux_vm.live.agent-starting.xml");

        Assert.True(domain.HasGuestAgentChannel);
        Assert.Equal("disconnected", domain.GuestAgentState);
    }

    [Fact]
    public void Domain_without_agent_channel_has_none_even_with_other_virtio_channels()
    {
        var domain = DomainXml.Parse(Fixture.Read("raw-no-agent.live.xml"), "running");

        Assert.False(domain.HasGuestAgentChannel);
        Assert.Null(domain.GuestAgentState);
    }

    [Fact]
    public void Cdroms_with_and_without_media_and_floppies_are_left_out()
    {
        var domain = OdaVm1();

        Assert.Equal(["vda", "vdb", "vdc", "vdd", "vde"], domain.Disks.Select(d => d.Target));
        Assert.DoesNotContain(domain.Disks, d => d.Source is not null && d.Source.EndsWith(".iso", StringComparison.Ordinal));
    }

    [Fact]
    public void Disk_on_an_overlay_names_the_overlay_as_source_and_the_file_below_it_in_the_chain()
    {
        var vda = Disk(OdaVm1(), "vda");

        Assert.Equal($"{OdaStore}/vm_oda_vm1/oda_vm1_boot.FILE_STAGE_BACKUP.TEMP", vda.Source);
        Assert.Equal("qcow2", vda.Format);
        Assert.True(vda.OnOverlay);
        Assert.Equal([$"{OdaStore}/vm_oda_vm1/oda_vm1_boot"], vda.BackingChain);
        Assert.Equal(["raw"], vda.BackingFormats);
    }

    [Fact]
    public void Two_deep_chain_lists_its_images_top_first_with_their_formats()
    {
        var vde = Disk(OdaVm1(), "vde");

        Assert.Equal("/var/lib/libvirt/images/x1-vde.FILE_STAGE_BACKUP.FILE_STAGE_BACKUP.TEMP", vde.Source);
        Assert.Equal(["/var/lib/libvirt/images/x1-vde.FILE_STAGE_BACKUP.TEMP", "/var/lib/libvirt/images/x1-vde.qcow2"], vde.BackingChain);
        Assert.Equal(["qcow2", "qcow2"], vde.BackingFormats);
    }

    [Fact]
    public void Raw_disk_on_its_own_file_has_format_raw_and_no_chain()
    {
        var vdb = Disk(OdaVm1(), "vdb");

        Assert.Equal($"{OdaStore}/vdisk_data1/data1", vdb.Source);
        Assert.Equal("raw", vdb.Format);
        Assert.False(vdb.OnOverlay);
    }

    [Fact]
    public void Block_disk_reads_its_device_path()
    {
        var vdc = Disk(OdaVm1(), "vdc");

        Assert.Equal("block", vdc.Type);
        Assert.Equal("/dev/mapper/vg_data-lv_oda_vm1", vdc.Source);
        Assert.Equal("raw", vdc.Format);
    }

    [Fact]
    public void Path_with_spaces_quotes_and_a_comma_is_read_exactly()
    {
        Assert.Equal("/srv/vm images/it's \"quoted\", really.qcow2", Disk(OdaVm1(), "vdd").Source);
    }

    [Fact]
    public void Readonly_and_shareable_disks_are_flagged()
    {
        var domain = DomainXml.Parse(Fixture.Read("raw-no-agent.live.xml"), "running");

        Assert.False(Disk(domain, "vda").ReadOnly);
        var vdb = Disk(domain, "vdb");
        Assert.True(vdb.ReadOnly);
        Assert.True(vdb.Shareable);
    }

    [Fact]
    public void Disk_without_driver_type_is_taken_as_raw()
    {
        const string xml = "<domain><name>d</name><devices><disk type='file' device='disk'><source file='/x/y'/><target dev='vda'/></disk></devices></domain>";

        Assert.Equal("raw", Assert.Single(DomainXml.Parse(xml).Disks).Format);
    }

    [Theory]
    [InlineData("")]
    [InlineData("error: failed to get domain 'linux_vm2'")]
    [InlineData("<domain><name>x</name>")]
    public void Output_that_is_not_xml_is_a_parser_error(string output)
    {
        var ex = Assert.Throws<BackupException>(() => DomainXml.Parse(output));

        Assert.Equal(ErrorIds.UnparsableOutput, ex.ErrorId);
        Assert.Equal(BackupErrorCategory.ParserError, ex.Category);
    }

    [Fact]
    public void ReplaceDiskSource_points_the_disk_at_its_own_file_with_its_own_format_and_no_chain()
    {
        var xml = Fixture.Read("oda_vm1.on-overlay.inactive.xml");

        var fixedXml = DomainXml.ReplaceDiskSource(xml, "vda", $"{OdaStore}/vm_oda_vm1/oda_vm1_boot", "raw");

        var vda = Disk(DomainXml.Parse(fixedXml), "vda");
        Assert.Equal($"{OdaStore}/vm_oda_vm1/oda_vm1_boot", vda.Source);
        Assert.Equal("raw", vda.Format);
        Assert.False(vda.OnOverlay);
        var element = DiskElement(fixedXml, "vda");
        Assert.Empty(element.Elements("backingStore"));
        Assert.Null(element.Element("source")!.Attribute("index"));
        Assert.Equal("qemu", (string?)element.Element("driver")!.Attribute("name"));
    }

    [Fact]
    public void ReplaceDiskSource_leaves_the_other_disks_and_devices_untouched()
    {
        var xml = Fixture.Read("oda_vm1.on-overlay.inactive.xml");

        var fixedXml = DomainXml.ReplaceDiskSource(xml, "vda", $"{OdaStore}/vm_oda_vm1/oda_vm1_boot", "raw");

        Assert.True(XNode.DeepEquals(DiskElement(xml, "vdb"), DiskElement(fixedXml, "vdb")));
        Assert.True(XNode.DeepEquals(DiskElement(xml, "hdc"), DiskElement(fixedXml, "hdc")));
        Assert.True(XNode.DeepEquals(XDocument.Parse(xml).Root!.Element("devices")!.Element("channel"),
            XDocument.Parse(fixedXml).Root!.Element("devices")!.Element("channel")));
        Assert.Equal("oda_vm1", DomainXml.Parse(fixedXml).Name);
    }

    [Fact]
    public void ReplaceDiskSource_of_a_live_xml_drops_the_index_of_the_source()
    {
        var xml = Fixture.Read("oda_vm1.on-overlay.live.xml");

        var fixedXml = DomainXml.ReplaceDiskSource(xml, "vda", $"{OdaStore}/vm_oda_vm1/oda_vm1_boot", "raw");

        var source = DiskElement(fixedXml, "vda").Element("source")!;
        Assert.Equal($"{OdaStore}/vm_oda_vm1/oda_vm1_boot", (string?)source.Attribute("file"));
        Assert.Null(source.Attribute("index"));
        Assert.Equal("5", (string?)DiskElement(fixedXml, "vdd").Element("source")!.Attribute("index"));
    }

    [Fact]
    public void ReplaceDiskSource_of_a_block_disk_sets_dev_not_file()
    {
        var xml = Fixture.Read("oda_vm1.on-overlay.live.xml");

        var fixedXml = DomainXml.ReplaceDiskSource(xml, "vdc", "/dev/mapper/other", "raw");

        var source = DiskElement(fixedXml, "vdc").Element("source")!;
        Assert.Equal("/dev/mapper/other", (string?)source.Attribute("dev"));
        Assert.Null(source.Attribute("file"));
    }

    [Fact]
    public void ReplaceDiskSource_of_an_unknown_target_is_an_error_naming_it()
    {
        var ex = Assert.Throws<BackupException>(() =>
            DomainXml.ReplaceDiskSource(Fixture.Read("oda_vm1.on-overlay.inactive.xml"), "vdz", "/x", "raw"));

        Assert.Contains("vdz", ex.Message, StringComparison.Ordinal);
    }

    private static XElement DiskElement(string xml, string target) =>
        XDocument.Parse(xml).Root!.Element("devices")!.Elements("disk")
            .Single(d => (string?)d.Element("target")?.Attribute("dev") == target);
}
